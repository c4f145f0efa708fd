"""``steer-lens finetune``: build a task-tuned expert (``steer_lens.finetune``), cached as a local
HF folder that ``--expert FOLDER`` / ``load_model(FOLDER)`` loads. ``--fast`` tunes a tiny random
model from ``steer_lens.testing`` for a few steps (smoke test, seconds)."""

from __future__ import annotations

from pathlib import Path

from .common import CLIError, add_command, emit, log, positive_int, table


def register(sub, parent) -> None:
    p = add_command(sub, "finetune", parent, run,
                    "fine-tune a copy of a model on a dataset's training rows (answer-token or choice loss, "
                    "embeddings frozen, AdamW, seeded), evaluate it on train/validation/test and save it "
                    "as a local HF folder with expert_card.json (cached: same settings, same folder)",
                    "steer-lens finetune --model gemma-3-270m --dataset sst2 --steps 60 --batch-size 8 --lr 2e-4 "
                    "--train-layers 4 --threads 2\n"
                    "  steer-lens finetune --fast --dataset sst2            # tiny random model, seconds")
    p.add_argument("--model", default=None, help="base model: registry name, HF folder or .gguf")
    p.add_argument("--dataset", default="sst2", help="bundled dataset name or folder (default sst2)")
    p.add_argument("--steps", type=positive_int, default=300, help="optimizer steps (default 300)")
    p.add_argument("--lr", type=float, default=3e-5, help="AdamW learning rate (default 3e-5)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="rows per step (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--splits", default=None,
                   help="comma-separated training splits (default: train plus train_extra when bundled)")
    p.add_argument("--train-limit", type=positive_int, default=None, help="seeded subsample of the training rows")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup", type=float, default=0.1, help="share of steps with linear warm-up (default 0.1)")
    p.add_argument("--no-balance", action="store_true",
                   help="sample rows uniformly (default: weight 1 / count of the row's answer index)")
    p.add_argument("--eval-limit", type=positive_int, default=None,
                   help="validation/test items scored (default: all)")
    p.add_argument("--train-eval", type=positive_int, default=200,
                   help="training rows scored for the train accuracy (default 200)")
    p.add_argument("--train-layers", type=positive_int, default=None,
                   help="train only the last N blocks and the final norm (default: every block)")
    p.add_argument("--no-base-eval", action="store_true",
                   help="skip scoring the untuned base model on validation first")
    p.add_argument("--root", default=None, help="experts folder (default: <steer_lens cache>/experts)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cached expert exists")
    p.add_argument("--card-copy", default=None, help="also write the expert card to this file")
    p.add_argument("--fast", action="store_true", help="tiny random model, few steps (smoke test)")
    p.add_argument("--device", default=None, help="where to train and evaluate: cpu (default), cuda, cuda:N, mps")
    p.add_argument("--objective", choices=("answer", "choice"), default="answer",
                   help="answer: cross-entropy of the right answer's tokens (default); choice: cross-entropy "
                        "over the choices of their length-normalised scores, as evaluation ranks them")
    p.add_argument("--checkpoint-every", type=positive_int, default=25,
                   help="save the training state every N steps beside the expert's folder; running the same "
                        "command again after an interruption resumes there (default 25)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="keep the training checkpoint in this folder instead (e.g. storage that outlives "
                        "the machine); pass the same folder again to resume")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="weights and optimizer dtype (default float32; part of the expert's cache key)")


def _fast(args) -> None:
    from ..models import cache_dir
    from ..testing import make_tiny_pair

    target, _ = make_tiny_pair(cache_dir() / "tiny_models", n_ctx=4096)
    args.model = str(target)
    args.steps, args.batch_size, args.lr = min(args.steps, 8), min(args.batch_size, 4), 1e-3
    args.train_limit = min(args.train_limit or 32, 32)
    args.eval_limit, args.train_eval = min(args.eval_limit or 8, 8), min(args.train_eval, 8)


def run(args) -> int:
    from ..data import load_dataset
    from ..experts import build_expert
    from ..finetune import FinetuneSettings

    if args.fast:
        _fast(args)
    if not args.model:
        raise CLIError("give --model (registry name, HF folder or .gguf), or --fast")
    if not args.lr > 0:
        raise CLIError(f"--lr must be > 0, got {args.lr}")
    dataset = load_dataset(args.dataset)
    splits = tuple(s for s in args.splits.split(",") if s) if args.splits else None
    settings = FinetuneSettings(steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                                train_splits=splits, train_limit=args.train_limit,
                                weight_decay=args.weight_decay, warmup=args.warmup, balance=not args.no_balance,
                                train_layers=args.train_layers, dtype=args.dtype, objective=args.objective)
    folder, card, reused = build_expert(args.model, dataset, settings, root=Path(args.root) if args.root else None,
                                        force=args.force, train_eval=args.train_eval,
                                        eval_limit=args.eval_limit, eval_base=not args.no_base_eval, log=log,
                                        device=args.device, checkpoint_every=args.checkpoint_every,
                                        checkpoint_dir=args.checkpoint_dir)
    if args.card_copy:
        from ..io import write_json

        write_json(args.card_copy, card)
    acc = card["accuracy"]
    rows = [[split, f"{a['accuracy']:.3f}", f"[{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]", a["n"],
             f"{a['majority_rate']:.2f}"] for split, a in acc.items()]
    text = (f"expert: {folder}{' (cached)' if reused else ''}\n"
            f"base {card['base_model']}, dataset {card['dataset']}, {card['rows']} rows, "
            f"{card['settings']['steps']} steps, train time {card['train_seconds']:.0f}s\n"
            + table(rows, ["split", "accuracy", "95% CI", "n", "majority"])
            + f"\nuse it: steer-lens fit --expert {folder} ...")
    return emit(args, {"folder": str(folder), "reused": reused, "card": card}, text)

