"""Benchmark steer_lens.rfm.RFM against xrfm's RFM on the same data and settings.

Both fit `iters` AGOP updates and one final KRR, then the AGOP of the final
predictor (xrfm: get_agop_best_model=True, return_best_params=False,
early_stop_rfm=False, center_grads=False; ours: no validation set). Inputs are
centred and divided by the median pairwise distance (our scaling) once, and
xrfm gets that pre-scaled matrix, so both see identical data. xrfm requires a
validation set; it gets a 16-row one (its per-iteration scoring cost is negligible).

Usage: python benchmarks/bench_rfm.py [--fast] [--repeats R] [--threads T [T ...]]
Writes benchmarks/results/rfm.json (atomic write).
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from steer_lens.rfm import RFM, RFMConfig


def make_data(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Residual-stream-like data: norms in the hundreds, label = sign of one hidden direction."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u /= u.norm()
    X = torch.randn(n, d, generator=g) * 8.0 + torch.randn(d, generator=g) * 20.0
    z = (X - X.mean(0)) @ u
    y = torch.where(z > 0, 1.0, -1.0)
    return X, y, u


def top_eigvec(M: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigh(M.double())[1][:, -1]


def measure(n: int, d: int, iters: int, repeats: int, threads: int) -> dict:
    """Best-of-`repeats` wall-clock of both implementations (interleaved) at `threads` torch threads."""
    from xrfm import RFM as XRFM  # reference implementation

    torch.set_num_threads(threads)
    X, y, u = make_data(n, d)
    cfg = RFMConfig(kernel="laplace", bandwidth=1.0, ridge=1e-3, iters=iters, dtype=torch.float32)
    ours = RFM(cfg).fit(X, y)  # warm-up, and gives the shared scaling
    Xs = ((X - ours.shift) / ours.scale).contiguous()
    yc = y[:, None].contiguous()

    def run_ours() -> torch.Tensor:
        return RFM(cfg).fit(X, y).M

    def run_xrfm() -> torch.Tensor:
        m = XRFM(kernel="laplace", bandwidth=cfg.bandwidth, exponent=1.0, iters=cfg.iters,
                 device="cpu", diag=False, verbose=False)
        m.fit((Xs, yc), (Xs[:16], yc[:16]), iters=cfg.iters, reg=cfg.ridge, return_best_params=False,
              early_stop_rfm=False, center_grads=False, get_agop_best_model=True, verbose=False)
        return m.agop_best_model

    run_xrfm()  # warm-up
    t_ours, t_x = [], []
    for _ in range(repeats):  # interleaved, so background load hits both alike
        t0 = time.perf_counter()
        M_ours = run_ours()
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        M_x = run_xrfm()
        t_x.append(time.perf_counter() - t0)
    v_o, v_x = top_eigvec(M_ours), top_eigvec(M_x)
    return {
        "rfm_vs_xrfm_time_ratio": min(t_ours) / min(t_x),
        "rfm_vs_xrfm_top_eigvec_cosine": abs(float(v_o @ v_x)),
        "rfm_seconds_best": min(t_ours),
        "xrfm_seconds_best": min(t_x),
        "rfm_seconds_all": t_ours,
        "xrfm_seconds_all": t_x,
        "top_eigvec_cosine_with_true_direction": {"ours": abs(float(v_o @ u.double())), "xrfm": abs(float(v_x @ u.double()))},
        "torch_threads": threads,
        "load_average_1min": os.getloadavg()[0],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true", help="tiny size (n=300, d=64, 2 repeats)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch thread counts to measure; the first gives the headline keys "
                         "(default: torch's default, then 1)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "rfm.json"))
    args = ap.parse_args(argv)
    n, d = (300, 64) if args.fast else (2000, 640)
    repeats = args.repeats or (2 if args.fast else 5)
    threads = args.threads or list(dict.fromkeys([torch.get_num_threads(), 1]))
    runs = [measure(n, d, args.iters, repeats, t) for t in threads]
    result = {
        **runs[0],
        "by_threads": {str(r["torch_threads"]): r for r in runs},
        "n": n, "d": d, "iters": args.iters, "repeats": repeats, "kernel": "laplace", "bandwidth": 1.0,
        "ridge": 1e-3, "dtype": "float32", "cpu_count": os.cpu_count(), "torch_version": torch.__version__,
        "fast": args.fast,
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".rfm.", suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=2)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
