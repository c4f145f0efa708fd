"""All-pairs layer MI: steer_lens.mi.mi_matrix on 18 expert x 30 target layers, n=2000, d 640/576.

Synthetic activations: 16 latent factors shared by all layers plus per-layer noise (Gaussian
estimator, the pipeline's default, PCA width k=32). Headline: noise with a power-law spectrum
(variance of component i ~ (1+i)^-1.2, like real residual streams); beside it the worst case for
the subspace-iteration PCA, isotropic noise (flat spectrum beyond the 16 factors). Best of N.

Usage: python benchmarks/bench_mi.py [--fast] [--repeats N] [--threads T]   (default 2 threads)
"""

from __future__ import annotations

import _common as C


def data(n: int, le: int, lt: int, de: int, dt: int, seed: int = 0, spectrum: str = "powerlaw"):
    import torch

    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 16, generator=g)  # shared latent factors

    def layers(count: int, d: int):
        scale = (1 + torch.arange(d)) ** -0.6 if spectrum == "powerlaw" else torch.ones(d)
        noise = torch.randn(n, count, d, generator=g) * scale
        return torch.einsum("nk,lkd->nld", z, torch.randn(count, 16, d, generator=g) * 0.3) + noise

    return layers(le, de), layers(lt, dt)


def main(argv=None) -> int:
    p = C.parser(__doc__)
    p.set_defaults(threads=2)  # the target is stated for 2 cores
    args = p.parse_args(argv)
    C.setup(args)
    from steer_lens.mi import mi_matrix

    n, le, lt, de, dt = (200, 3, 4, 48, 64) if args.fast else (2000, 18, 30, 640, 576)
    repeats = args.repeats or (1 if args.fast else 2)
    load_before = C.load()
    xe, xt = data(n, le, lt, de, dt)
    out = {}
    times = C.interleaved({"mi_matrix": lambda: out.setdefault("m", mi_matrix(xe, xt, k=32))}, repeats, warmup=0)
    m = out["m"]
    xe, xt = data(n, le, lt, de, dt, spectrum="flat")
    flat = C.interleaved({"flat": lambda: mi_matrix(xe, xt, k=32)}, 1, warmup=0)["flat"]
    C.write(args, "mi", {
        "mi_all_pairs_seconds": min(times["mi_matrix"]), "seconds_all": times["mi_matrix"],
        "flat_spectrum_worst_case_seconds": min(flat),
        "shape": [n, le, lt, de, dt], "estimator": "gaussian", "k": 32, "repeats": repeats,
        "mi_range_nats": [float(m.min()), float(m.max())], "data": "synthetic: 16 shared latent factors + power-law noise",
        "load_before": load_before, "load_after": C.load(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
