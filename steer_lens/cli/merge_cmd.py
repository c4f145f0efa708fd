"""``steer-lens merge``: fold a plan at a fixed strength into the target's weights, written as a
standard Hugging Face checkpoint that any serving stack loads without steer-lens."""

from __future__ import annotations

from pathlib import Path

from .common import CLIError, add_command, add_model_args, emit, load_model, load_plan, strength


def register(sub, parent) -> None:
    p = add_command(sub, "merge", parent, run, "fold a plan at a fixed strength into the target model's "
                    "weights (a bias on each steered block's output, on every token) and write a plain "
                    "Hugging Face checkpoint that needs no steer-lens (Llama-family targets)",
                    "steer-lens merge plans/sst2 --strength 0.1 --out smollm2-sst2   "
                    "# then: AutoModelForCausalLM.from_pretrained('smollm2-sst2')")
    p.add_argument("plan", help="plan folder")
    p.add_argument("--strength", type=strength, required=True,
                   help="relative strength, as in plan.apply / evaluate --strength (x the stored median norm)")
    p.add_argument("--out", required=True, help="output folder (replaced only if it holds an earlier merge)")
    p.add_argument("--model", default=None,
                   help="the plan's target model: registry name, Hugging Face folder or .gguf "
                        "(default: the target name recorded in the plan)")
    add_model_args(p)  # --dtype is also the dtype of the written checkpoint


def _target_name(plan, given: str | None) -> str:
    from ..models import REGISTRY

    if given:
        return given
    name = str(plan.target.get("name", ""))
    if name in REGISTRY or (name and Path(name).expanduser().exists()):
        return name
    raise CLIError(f"the plan's target {name!r} is neither a registry model ({', '.join(sorted(REGISTRY))}) "
                   "nor an existing path; pass --model with the model the plan was fitted for")


def run(args) -> int:
    from ..merge import CARD, bias_deltas, check_foldable, merge_plan, read_card

    plan = load_plan(args.plan)
    check_foldable(plan)  # cheap refusals before the (slow) model load
    if plan.target.get("n_layers"):
        bias_deltas(plan, args.strength, int(plan.target["n_layers"]))
    name = _target_name(plan, args.model)
    model = load_model(name, args)
    out = merge_plan(model, plan, args.strength, args.out)
    card = read_card(out)
    info = {"out": str(out), "model": name, "strength": args.strength, "biases": card["biases"],
            "card": str(out / CARD)}
    biases = ", ".join(f"{b} <- {' + '.join(hooks)}" for b, hooks in card["biases"].items())
    text = (f"wrote {out}: {name} with the plan folded in at strength {args.strength:g} ({biases}); "
            f"load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return emit(args, info, text)
