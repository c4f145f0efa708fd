"""One method on one dataset beside its random control, the unsteered target and calibration."""

from __future__ import annotations

from .. import methods as M
from ..evaluate import EvalResult
from ..protocol import paired


def compare_method(bench, dataset, method: str, *, baselines: tuple[str, ...] = ("unsteered", "calibration")) -> dict:
    """Run (or read from the cache) ``method``, its random control and ``baselines`` on ``dataset``;
    returns the rows and the paired differences of ``method`` against each (bootstrap CI, McNemar p)."""
    ctrl = M.control_of(method)
    names = [method] + ([ctrl] if ctrl else []) + [b for b in baselines if b != method]
    names = bench.applicable(dataset, names)
    rows = {m: bench.row(dataset, m) for m in names}
    main = EvalResult.from_dict(rows[method])
    diffs = {m: paired(main, EvalResult.from_dict(r)) for m, r in rows.items()
             if m != method and r["ids"] == rows[method]["ids"]}
    return {"dataset": rows[method]["dataset"], "method": method, "control": ctrl, "rows": rows, "vs": diffs}


def render_compare(res: dict) -> str:
    """``compare_method``'s result as text: one line per row, then the paired differences."""
    lines = [f"{res['dataset']}: {res['method']} on test (strength chosen on validation)",
             f"{'row':<30} {'accuracy':>8}  {'95% CI':<16} {'n':>4}  {'strength':>8}  layers"]
    for name, r in res["rows"].items():
        s = r.get("strength", 0.0)
        strength = "-" if name in ("unsteered", "calibration", "expert_unsteered") else f"{s:g}"
        lines.append(f"{name:<30} {r['accuracy']:>8.3f}  [{r['ci_low']:.3f}, {r['ci_high']:.3f}]   {r['n']:>4}  "
                     f"{strength:>8}  {' '.join(map(str, r.get('layers') or [])) or '-'}")
    if res["rows"][res["method"]].get("strength") == 0:
        lines.append("validation chose strength 0: no steering chosen (the row equals the unsteered target)")
    for name, d in res["vs"].items():
        lines.append(f"{res['method']} - {name}: {d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], "
                     f"McNemar p = {d['mcnemar_p']:.3g}")
    return "\n".join(lines)


__all__ = ["compare_method", "render_compare"]
