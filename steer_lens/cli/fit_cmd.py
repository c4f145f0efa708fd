"""``steer-lens capture`` (activations to a file) and ``steer-lens fit`` (ExpertSteer -> plan folder)."""

from __future__ import annotations

import time
from pathlib import Path

from .common import (CLIError, add_command, add_model_args, emit, layer_spec, load_items, load_model, log,
                     positive_int, read_prompts, table, window)

ALIGNMENTS = ("autoencoder", "ridge", "procrustes", "hybrid")


def register(sub, parent) -> None:
    p = add_command(sub, "capture", parent, run_capture, "capture residual-stream activations of a model "
                    "on prompts (a text/JSONL file or a dataset's contrast pairs) into a safetensors file",
                    "steer-lens capture smollm2-135m-instruct --dataset sst2 --limit 20 --layers 0,10,-1 "
                    "--out acts.safetensors")
    p.add_argument("model", help="registry name, Hugging Face folder, .gguf file or HF-cache repo id")
    add_model_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="text file (one prompt per line) or JSONL ({\"prompt\": ...})")
    src.add_argument("--dataset", help="bundled dataset name or folder: captures its contrast pairs")
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=positive_int, default=None, help="at most this many items/prompts")
    p.add_argument("--layers", type=layer_spec, default=None, help="'all' (default), '0,5,-1' or '3-7'")
    p.add_argument("--position", choices=["last", "mean", "all"], default="last")
    p.add_argument("--hook", default="resid_post", help="resid_post (default), resid_pre, attn_out, mlp_out (resid_mid cannot be steered on a bridge)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--out", required=True, help="output .safetensors file (a folder with --shard-size)")
    p.add_argument("--shard-size", type=positive_int, default=None,
                   help="stream to OUT/shard-NNNNN.safetensors + OUT/index.json, this many prompts per file: "
                        "memory is bounded by the shard, not the dataset (read back with Activations.load(OUT))")

    p = add_command(sub, "fit", parent, run_fit, "fit ExpertSteer (expert activations -> aligned -> lowest-MI layer "
                    "pairs -> RFM steering vectors) or, with --method, any registered recipe with its candidate and "
                    "strength chosen on validation; saves a plan folder",
                    "steer-lens fit --expert gemma-3-270m --target smollm2-135m-instruct --dataset sst2 "
                    "--limit 50 --out plans/sst2\n  steer-lens fit --method label_caa --target smollm2-135m-instruct "
                    "--dataset sst2 --out plans/sst2_label_caa")
    add_fit_args(p, expert="", limit=None)
    p.add_argument("--method", default=None,
                   help="a registered method (`steer-lens bench --list`): fitted on train, candidate and strength "
                        "chosen on validation (the plan folder gets choice.json); the ExpertSteer flags below are "
                        "then ignored")
    p.add_argument("--val-limit", type=positive_int, default=None,
                   help="--method: validation items (default: the benchmark's rule set, 100)")
    p.add_argument("--out", required=True, help="plan folder to write (replaced atomically)")


def add_fit_args(p, *, expert: str | None = None, target: str | None = None, dataset: str | None = None,
                 limit: int | None = 50, ae_epochs: int = 300, with_dataset: bool = True) -> None:
    p.add_argument("--expert", default=expert or None, required=expert is None,
                   help="expert model" + (" (ExpertSteer and the expert's methods)" if expert == "" else ""))
    p.add_argument("--target", default=target, required=target is None, help="target model")
    if with_dataset:
        p.add_argument("--dataset", default=dataset, required=dataset is None, help="dataset (train split)")
    p.add_argument("--split", default="train", help="split to fit on (default: train)")
    p.add_argument("--limit", type=positive_int, default=limit,
                   help=f"training items (default: {limit if limit else '50; with --method the rule set, 64'})")
    p.add_argument("--alignment", choices=ALIGNMENTS, default="autoencoder")
    p.add_argument("--n-pairs", type=positive_int, default=3, help="expert->target layer pairs (default 3)")
    p.add_argument("--target-window", type=window, default="auto",
                   help="inclusive target-layer range 'lo,hi', 'none', or 'auto' (skip first/last 2)")
    p.add_argument("--mi-dim", type=positive_int, default=None, help="PCA width for MI (default: auto)")
    p.add_argument("--ae-solver", choices=("closed_form", "adam"), default="closed_form",
                   help="autoencoder solver: closed_form (exact optimum of the reconstruction loss, PCA; "
                        "default) or adam (gradient training as in the paper)")
    p.add_argument("--ae-epochs", type=positive_int, default=ae_epochs,
                   help=f"max epochs for --ae-solver adam and for hybrid (default {ae_epochs}; early stopping "
                        "may end sooner)")
    p.add_argument("--mode", choices=("fixed", "field"), default="fixed",
                   help="fixed: add the RFM's top AGOP eigenvector (default); field: add, at each token, the "
                        "unit gradient of the RFM predictor at that token (needs --alignment ridge or procrustes)")
    p.add_argument("--seed", type=int, default=0)
    add_model_args(p)  # both models


def resolve_window(spec, n_layers: int) -> tuple[int, int] | None:
    if spec == "auto":
        return (2, n_layers - 3) if n_layers >= 8 else None
    return spec


def fit_plan(args, expert, target, items):
    """Fit ExpertSteer on ``items``' contrast pairs with the CLI's settings; returns the plan."""
    from ..data import contrast_prompts
    from ..pipeline import ExpertSteer

    pos, neg = contrast_prompts(items, seed=args.seed)
    kw = {}
    if args.alignment == "hybrid" or (args.alignment == "autoencoder" and args.ae_solver == "adam"):
        kw = {"solver": "adam", "max_epochs": args.ae_epochs}
    es = ExpertSteer(n_pairs=args.n_pairs, alignment=args.alignment, seed=args.seed, mi_dim=args.mi_dim,
                     target_window=resolve_window(args.target_window, target.cfg.n_layers), aligner_kwargs=kw,
                     mode=getattr(args, "mode", "fixed"))
    t0 = time.perf_counter()
    log(f"fitting ExpertSteer ({args.alignment}, {args.n_pairs} pairs) on {len(pos)} contrast pairs ...")
    plan = es.fit(expert, target, pos, neg)
    log(f"fitted in {time.perf_counter() - t0:.1f}s")
    return plan


def save_plan(plan, folder) -> dict:
    """Save the plan folder plus its MI heatmap (``mi.png``); returns the paths."""
    from ..mi import LayerPair, plot_mi

    folder = Path(plan.save(folder))
    out = {"plan": str(folder)}
    if plan.mi is not None:
        pairs = [LayerPair(p.expert_layer, p.target_layer, p.mi) for p in plan.pairs]
        plot_mi(plan.mi, pairs, expert_layers=plan.expert_layers or None,
                target_layers=plan.target_layers or None, path=folder / "mi.png",
                title=f"MI: {plan.expert.get('name')} -> {plan.target.get('name')}")
        out["mi_heatmap"] = str(folder / "mi.png")
    return out


def plan_summary(plan) -> tuple[dict, str]:
    """JSON-able summary and a text rendering of pairs, norms and alignment reports."""
    pairs = [{"expert_layer": p.expert_layer, "target_layer": p.target_layer, "mi": round(p.mi, 4),
              "norm": round(plan.norms.get(f"blocks.{p.target_layer}.hook_resid_post", float("nan")), 2)}
             for p in plan.pairs]
    text = table([[p["expert_layer"], p["target_layer"], f"{p['mi']:.4f}", p["norm"]] for p in pairs],
                 ["expert layer", "target layer", "MI (nats)", "resid norm"])
    reports = {k: v for k, v in plan.reports.items() if k.startswith("pair_")} or plan.reports
    keys = sorted({k for v in reports.values() for k, x in v.items() if isinstance(x, (int, float))})[:4]
    if keys:
        rows = [[name] + [f"{r.get(k, float('nan')):.3f}" for k in keys] for name, r in reports.items()]
        text += "\n\nalignment reports (held-out):\n" + table(rows, ["aligner"] + keys)
    return {"pairs": pairs, "alignment_reports": reports}, text


def run_fit(args) -> int:
    if getattr(args, "method", None):
        return run_fit_method(args)
    if not args.expert:
        raise CLIError("fit needs --expert (ExpertSteer), or --method NAME for a registered recipe")
    args.limit = args.limit or 50
    expert_model = load_model(args.expert, args)
    target_model = load_model(args.target, args)
    _, items = load_items(args.dataset, args.split, args.limit, args.seed)
    if len(items) < 4:
        raise ValueError(f"need at least 4 {args.split} items to fit, got {len(items)}; raise --limit")
    plan = fit_plan(args, expert_model, target_model, items)
    paths = save_plan(plan, args.out)
    summary, text = plan_summary(plan)
    text = f"chosen layer pairs:\n{text}\n\nplan saved to {paths['plan']}"
    if "mi_heatmap" in paths:
        text += f"\nMI heatmap: {paths['mi_heatmap']}"
    return emit(args, {**summary, **paths, "n_items": len(items)}, text)


def run_fit_method(args) -> int:
    """``fit --method NAME``: the registered recipe, chosen on validation, saved as a plan folder."""
    from .. import methods as M
    from ..io import write_json

    method = M.get(args.method)
    if method.needs_expert and not args.expert:
        raise CLIError(f"method {args.method!r} needs --expert")
    rules = M.RuleSet()
    rules = rules.replace(limit_train=args.limit or rules.limit_train, limit_val=args.val_limit or rules.limit_val)
    target = load_model(args.target, args)
    expert = load_model(args.expert, args) if method.needs_expert else None
    log(f"fitting {args.method} on {args.dataset} (train) and choosing on validation ...")
    plan, choice = M.fit_method(args.method, target, args.dataset, expert=expert, rules=rules)
    folder = plan.save(args.out)
    write_json(Path(folder) / "choice.json", choice)
    s = choice["strength"]
    layers = " ".join(map(str, M.plan_layers(plan)))
    text = (f"{args.method} on {args.dataset}: layers {layers}, candidate {choice['candidate']}; validation chose "
            + ("strength 0: no steering chosen" if s == 0 else f"strength {s:g}")
            + f"\nplan saved to {folder} (choice.json: the validation curve)")
    return emit(args, {"plan": str(folder), **choice}, text)


def run_capture(args) -> int:
    from ..activations import capture

    if args.shard_size is None and not args.out.endswith(".safetensors"):
        raise CLIError(f"--out must end in .safetensors, got {args.out!r} (or pass --shard-size to stream to a folder)")
    if args.shard_size is not None and args.out.endswith(".safetensors"):
        raise CLIError(f"with --shard-size, --out is a folder; drop the .safetensors suffix from {args.out!r}")
    labels = None
    if args.dataset:
        from ..data import contrast_prompts

        _, items = load_items(args.dataset, args.split, args.limit)
        pos, neg = contrast_prompts(items)
        prompts, labels = pos + neg, [1] * len(pos) + [0] * len(neg)
    else:
        prompts = read_prompts(args.prompts)[: args.limit]
    model = load_model(args.model, args)
    layers = args.layers if args.layers is not None else list(range(model.cfg.n_layers))
    t0 = time.perf_counter()
    acts = capture(model, prompts, layers=layers, hook=args.hook, position=args.position,
                   batch_size=args.batch_size, progress=True, meta=None if labels is None else {"labels": labels},
                   out=args.out if args.shard_size else None, shard_size=args.shard_size or 1)
    if args.shard_size is None:
        acts.save(args.out)
        shape, where = list(acts.tensor.shape), f"(shape {tuple(acts.tensor.shape)})"
    else:
        shape, where = None, f"({acts.num_shards} shards)"
    info = {"out": args.out, "shape": shape, "layers": acts.layers, "position": args.position,
            "n_prompts": len(prompts), "seconds": round(time.perf_counter() - t0, 2)}
    return emit(args, info, f"captured {len(prompts)} prompts x {len(acts.layers)} layers -> {args.out} {where}")
