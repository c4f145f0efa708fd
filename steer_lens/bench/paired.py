"""The benchmark report's paired tests: each method against its random control, the calibration baseline,
the alternatives to steering and the unsteered row, on the same test items (exact McNemar, paired bootstrap),
with the report's Benjamini-Hochberg family. ``steer_lens.bench.report`` shows them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from ..evaluate import mcnemar, paired_bootstrap
from ..stats import bh as bh_adjust
from .views import ALTERNATIVES, CONTROL_OF, REFERENCES

MAIN = "expertsteer_autoencoder"
LABEL_MAIN = "expertsteer_label"
# the zero-cost baseline of two-way sets: the unsteered margins plus a validation-fitted bias (no steering)
CALIBRATION = "calibration"


def _by_dataset(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """dataset -> method -> row."""
    by: dict = defaultdict(dict)
    for r in rows:
        by[r["dataset"]][r["method"]] = r
    return by


def comparisons(rows: list[dict], main: str = MAIN,
                others: tuple[str, ...] = ("random", "self_rfm", "caa", "label_caa", "expertsteer_label", "iti",
                                           "unsteered")) -> list[dict]:
    """Paired test-set comparisons of ``main`` with the controls, per dataset."""
    out = []
    for ds, m in _by_dataset(rows).items():
        if main not in m:
            continue
        for other in others:
            if other in m and m[other]["ids"] == m[main]["ids"]:
                pb = paired_bootstrap(m[main]["correct"], m[other]["correct"])
                p = mcnemar(m[main]["correct"], m[other]["correct"])["p"]
                out.append({"dataset": ds, "method": main, "vs": other, "diff": round(pb["diff"], 3),
                            "ci": f"[{pb['ci_low']:.3f}, {pb['ci_high']:.3f}]",
                            "p_mcnemar": round(p, 3), "p": p, "verdict": _significance(pb, p)})
    return out


def _key(c: Mapping) -> tuple:
    return c["dataset"], c["method"], c["vs"]


def with_bh(comps: list[dict], bh: Mapping | None = None) -> list[dict]:
    """``comps`` with ``p_bh``: the Benjamini-Hochberg adjusted p-value, from ``bh`` (the report's whole
    family of paired tests, ``report_family``) or, without it, over ``comps`` alone."""
    if bh is None:
        uniq = {_key(c): c["p"] for c in comps}
        bh = dict(zip(uniq, bh_adjust(list(uniq.values()))))
    return [{**c, "p_bh": round(bh[_key(c)], 3)} for c in comps]


def _unique_tests(rows: list[dict]) -> list[dict]:
    comps = comparisons(rows) + label_comps(rows) + control_comps(rows) + calibration_comps(rows)
    return list({_key(c): c for c in comps}.values())


def report_family(rows: list[dict]) -> dict[tuple, float]:
    """Every paired test a report shows, (dataset, method, vs) -> BH-adjusted p over all of them (the
    exploratory family; a preregistered primary family gets Holm instead, in its own report)."""
    uniq = {_key(c): c["p"] for c in _unique_tests(rows)}
    return dict(zip(uniq, bh_adjust(list(uniq.values()))))


def _significance(pb: dict, p: float) -> int:
    """+1 / -1 when significantly better / worse (bootstrap CI and McNemar must agree), else 0."""
    if p >= 0.05:
        return 0
    return 1 if pb["ci_low"] > 0 else -1 if pb["ci_high"] < 0 else 0


def _verdict(a: list[bool], b: list[bool]) -> int:
    """``_significance`` of a vs b on the same items."""
    return _significance(paired_bootstrap(a, b), mcnemar(a, b)["p"])


def significance_summary(rows: list[dict]) -> list[dict]:
    """Per method: on how many datasets it is significantly better / worse than its model's
    unsteered row, than its random control and than the calibration baseline (paired on the same
    test items)."""
    tally: dict = defaultdict(lambda: defaultdict(int))
    for m in _by_dataset(rows).values():
        for method, r in m.items():
            if method in REFERENCES:
                continue
            rev = method.startswith("reverse_")
            refs = [("unsteered", "expert_unsteered" if rev else "unsteered"),
                    ("random", "reverse_random" if rev else CONTROL_OF.get(method, "random"))]
            for label, ref in refs + ([] if rev else [("calibration", CALIBRATION)]):
                b = m.get(ref)
                if b is None or b["ids"] != r["ids"]:
                    continue
                v = _verdict(r["correct"], b["correct"])
                t = tally[method]
                t[f"vs_{label}_n"] += 1
                t[f"vs_{label}_better"] += v > 0
                t[f"vs_{label}_worse"] += v < 0
            tally[method]["chose_no_steering"] += r.get("strength") == 0
            tally[method]["datasets"] += 1
    return [{"method": k, **v} for k, v in tally.items()]


def label_comps(rows: list[dict]) -> list[dict]:
    comps = comparisons(rows, LABEL_MAIN, ("random_label", "label_caa", "expertsteer_label_lowest_mi", "unsteered"))
    return comps + comparisons(rows, "expertsteer_label_field",
                               ("random_label_field", LABEL_MAIN, "label_caa", "unsteered"))


def control_comps(rows: list[dict]) -> list[dict]:
    return [c for m, ctrl in CONTROL_OF.items() if not m.startswith("reverse_") for c in comparisons(rows, m, (ctrl,))]


def calibration_comps(rows: list[dict]) -> list[dict]:
    methods = [m for m in dict.fromkeys(r["method"] for r in rows)
               if m not in REFERENCES and not m.startswith("reverse_")]
    return [c for m in methods for c in comparisons(rows, m, (CALIBRATION,))]


def alternative_comps(rows: list[dict]) -> list[dict]:
    """Each alternative to steering against the unsteered target, then every steering method against
    each alternative (paired, per dataset)."""
    present = list(dict.fromkeys(r["method"] for r in rows))
    alts = tuple(m for m in present if m in ALTERNATIVES)
    methods = [m for m in present if m not in REFERENCES and not m.startswith("reverse_")]
    return ([c for a in alts for c in comparisons(rows, a, ("unsteered",))]
            + [c for m in methods for c in comparisons(rows, m, alts)])
