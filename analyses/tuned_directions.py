"""Does a task-tuned expert hand the target a better label direction than its base model?

For each expert (e.g. base Gemma and Gemma tuned on SST-2) and each expert layer in ``--layers``,
the ExpertSteer label-contrast vector is fitted exactly as ``analyses/main_results.py`` fits
``expertsteer_label`` (ridge alignment, one pair at matched depth, the same ``--limit-train``
train items) and read three ways:

- ``expert_probe``: cross-validated logistic-probe AUROC of the item's TRUE answer at that expert
  layer, on held-out TEST prompts (prompt + choice-1 completion): what the expert knows there;
- ``knows_in_expert`` / ``knows_in_target``: AUROC of the true answer when the same held-out rows
  (aligned expert activations / the target's own activations at the steered layer) are projected
  on the steering vector: does the direction read the item-level knowledge, where it was found and
  where it is added? (A fixed vector can only shift every item alike; this asks whether it points
  along the knowledge at all.)
- ``cos_target_label``: cosine with the target's own label-CAA direction at the steered layer (the
  direction that is known to move its answers; ``results/benchmark``);
- ``shift_at_<s>``: what the vector does to the answer: the mean change in log p(choice 1) - log p(choice 0)
  at the first answer token where the two differ, after each test prompt, when the plan steers at signed strength ``s`` (nats; the
  vector's sign as fitted); ``caa_shift_at_<s>``: the same for the target's own label-CAA at that layer.

    python analyses/tuned_directions.py --experts gemma-3-270m <tuned folder> --layers 5 9 14 15 16 17
    python analyses/tuned_directions.py --fast

Writes ``results/tuned_directions/tuned_directions.csv`` and ``README.md`` (table + command).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lens_common import ROOT, load_models, markdown, start_run, write_csv  # noqa: E402
from steer_lens.activations import capture  # noqa: E402
from steer_lens.baselines import fit_caa  # noqa: E402
from steer_lens.data import contrast_prompts, load_dataset  # noqa: E402
from steer_lens.io import write_text  # noqa: E402
from steer_lens.ledger import split_section  # noqa: E402
from steer_lens.models import load_model  # noqa: E402
from steer_lens.pipeline import ExpertSteer, depth_match  # noqa: E402
from steer_lens.probes import direct_effect, last_logits, logistic_probe_auroc, projection_auroc  # noqa: E402


def answer_tokens(tokenizer, first: str, second: str) -> tuple[str, tuple[int, int]]:
    """(common prefix text, (token of ``first``, token of ``second``) where they first differ)."""
    a, b = (tokenizer(c, add_special_tokens=False).input_ids for c in (first, second))
    k = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), None)
    if k is None:
        raise ValueError(f"answers {first!r} and {second!r} tokenize to one prefix of the other; "
                         "the answer shift needs two answers that differ")
    return tokenizer.decode(a[:k]), (a[k], b[k])


def answer_shift(target, prompts, plan, strength: float, tokens: tuple[int, int], clean=None) -> float:
    """Mean change of log p(tokens[1]) - log p(tokens[0]) after each prompt when ``plan`` steers at
    ``strength`` (nats). ``clean``: ``last_logits(target, prompts)``, computed once by the caller."""
    dlp = direct_effect(target, prompts, plan=plan, strength=strength, clean=clean).mean_dlogprob
    return float(dlp[tokens[1]] - dlp[tokens[0]])


def pooled(model, prompts) -> torch.Tensor:
    """(prompt, layer, d): ExpertSteer's default pooled activations (every layer), one model."""
    es = ExpertSteer()
    return capture(model, list(prompts), layers=range(model.cfg.n_layers), hook=es.hook, position=es.position,
                   chat_template=es.chat_template, batch_size=es.batch_size).tensor


def expert_rows(name: str, expert, target, layers, train, test, t_acts, caa, shift) -> list[dict]:
    """One row per expert layer (see the module docstring). ``t_acts``: the target's (train label
    contrast, held-out) activations from ``pooled``, captured once for every expert; ``caa``: target
    layer -> (its label-CAA vector, {column: answer shift}); ``shift``: plan -> {column: answer shift}."""
    pos, neg = contrast_prompts(train, by="label")
    t_train, t_test = t_acts
    acts = (pooled(expert, list(pos) + list(neg)), t_train)  # what ExpertSteer.capture returns
    x_test = pooled(expert, contrast_prompts(test, by="label")[0])  # prompt + choice-1 completion
    truth = torch.tensor([it.answer == 1 for it in test])
    rows = []
    for e in layers:
        t = depth_match(e, expert.cfg.n_layers, target.cfg.n_layers)
        plan = ExpertSteer(alignment="ridge", pairs=[(e, t)]).fit(expert, target, pos, neg, activations=acts)
        hook = f"blocks.{t}.hook_resid_post"
        v, (own, own_shift) = plan.vectors[hook].float(), caa(t)
        z = plan.aligners[(e, t)].transform(x_test[:, e].double()).float()
        rows.append({"expert": name, "expert_layer": e, "target_layer": t,
                     "expert_probe": logistic_probe_auroc(x_test[truth, e], x_test[~truth, e]),
                     "knows_in_expert": projection_auroc(z[truth], z[~truth], v),
                     "knows_in_target": projection_auroc(t_test[truth, t], t_test[~truth, t], v),
                     "cos_target_label": float(torch.nn.functional.cosine_similarity(v, own, dim=0)),
                     **shift(plan), **{f"caa_{k}": x for k, x in own_shift.items()}})
    return rows


def parse(argv=None):
    import argparse

    p = argparse.ArgumentParser(prog="analyses/tuned_directions.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--experts", nargs="+", default=["gemma-3-270m"], help="registry names or tuned HF folders")
    p.add_argument("--layers", type=int, nargs="+", default=[5, 9, 14, 15, 16, 17], help="expert layers")
    p.add_argument("--dataset", default="sst2")
    p.add_argument("--limit-train", type=int, default=64, help="as main_results (2 contrast prompts each)")
    p.add_argument("--limit-test", type=int, default=200)
    p.add_argument("--shift-strengths", type=float, nargs="+", default=[-0.3, 0.3])
    p.add_argument("--shift-items", type=int, default=32, help="test prompts for the answer shift")
    p.add_argument("--out", default=str(ROOT / "results" / "tuned_directions"))
    p.add_argument("--fast", action="store_true", help="tiny random models, few items")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv=None) -> Path:
    a = parse(argv)
    out, command = start_run("tuned_directions", a, argv)
    ds = load_dataset("arithmetic_2way" if a.fast else a.dataset)
    train = ds.split("train", limit=8 if a.fast else a.limit_train)
    test = ds.split("test", limit=12 if a.fast else a.limit_test)
    target, tiny_expert = load_models(a.fast)
    label_pos, label_neg = contrast_prompts(train, by="label")
    t_layers = list(range(target.cfg.n_layers))
    t_train = pooled(target, list(label_pos) + list(label_neg))  # once: ExpertSteer fits and label-CAA
    label_acts = (t_train[:len(label_pos)], t_train[len(label_pos):])

    @functools.cache  # one fit and one shift per target layer, shared by every expert
    def caa(layer: int) -> tuple[torch.Tensor, dict]:  # the target's own label-CAA at ``layer``
        plan = fit_caa(target, label_pos, label_neg, layer, acts=label_acts, acts_layers=t_layers)
        return plan.vectors[f"blocks.{layer}.hook_resid_post"].float(), shift(plan)

    prefix, tokens = answer_tokens(target.tokenizer, *test[0].completions()[:2])
    prompts = [it.prompt() + prefix for it in test[:a.shift_items]]
    clean = last_logits(target, prompts)  # unsteered, shared by every shift

    def shift(plan) -> dict:
        return {f"shift_at_{s:+g}": answer_shift(target, prompts, plan, s, tokens, clean)
                for s in a.shift_strengths}

    t_acts = (t_train, pooled(target, contrast_prompts(test, by="label")[0]))
    rows = []
    for name in a.experts:
        expert = tiny_expert if a.fast else load_model(name)
        layers = [min(e, expert.cfg.n_layers - 1) for e in a.layers] if a.fast else a.layers
        rows += expert_rows(Path(name).name, expert, target, sorted(set(layers)), train, test, t_acts, caa, shift)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "tuned_directions.csv", rows)
    write_text(out / "README.md", "\n".join([
        "# Tuned vs base expert: what the label direction carries", "", f"Made by `{command}`.", "",
        (__doc__ or "").split("\n\n    python")[0], "",
        f"Dataset {ds.name}: {len(train)} train items, {len(test)} test items.", "",
        markdown(rows), "", split_section([ds.name])]))
    return out


if __name__ == "__main__":
    main()
