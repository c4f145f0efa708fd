"""steer_lens.profiling: block executions and tokens counted by phase, pass-through blocks of a
sweep not counted, phases nest, and the counter leaves no hook behind."""

from steer_lens.data import Item
from steer_lens.evaluate import evaluate
from steer_lens.profiling import ForwardCounter, note_points, phase

ITEMS = [Item(f"p{i}", f"Is {i} even?", ("no", "yes"), int(i % 2 == 0)) for i in range(5)]


def test_counts_blocks_and_tokens_by_phase(tiny_llama, one_thread):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_sweep import make_plan

    from steer_lens.sweep import sweep

    n = tiny_llama.cfg.n_layers

    def hooks():  # transformers installs output-capturing hooks of its own, once; only ours must go
        return [dict(b.original_component._forward_hooks) for b in tiny_llama.blocks]

    evaluate(tiny_llama, ITEMS[:1])
    hooks_before = hooks()
    with ForwardCounter(tiny_llama) as fc:
        with phase("test"):
            evaluate(tiny_llama, ITEMS, batch_size=8)
            note_points(1, len(ITEMS))
        with phase("search"), phase("grid"):
            sweep(tiny_llama, ITEMS, make_plan(tiny_llama, ["blocks.2.hook_resid_post"]), [0.5, 1.0], batch_size=8)
    test, grid = fc.stats["test"], fc.stats["search/grid"]
    # evaluate: one prompt pass (and one for choices of several tokens) through every block
    assert test["block_calls"] % n == 0 and test["block_calls"] > 0 and test["block_tokens"] > 0
    assert test["points"] == 1 and test["item_points"] == len(ITEMS)
    # sweep from block 2: blocks 0-1 once, blocks 2-3 per strength (pass-through blocks not counted)
    passes = test["block_calls"] // n
    assert grid["block_calls"] == passes * (2 + 2 * (n - 2))
    assert fc.totals("search")["block_calls"] == grid["block_calls"]
    assert fc.totals()["block_calls"] == test["block_calls"] + grid["block_calls"]
    before = fc.totals()
    evaluate(tiny_llama, ITEMS[:1])  # closed: nothing counted, no hook left
    assert fc.totals() == before
    assert hooks() == hooks_before


def test_phase_without_counter_is_a_no_op():
    with phase("x"):
        note_points(3, 10)


def _script(path):
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "benchmarks"))
    spec = importlib.util.spec_from_file_location(Path(path).stem, root / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_search_fast(tmp_path, one_thread):
    import json

    _script("benchmarks/profile_search.py").main(["--fast", "--results-dir", str(tmp_path)])
    res = json.loads((tmp_path / "profile_search.json").read_text())
    assert set(res["rows"]) == {"caa", "label", "pairs"}
    for rules in res["rows"].values():
        assert set(rules) == {"today", "reference", "halving", "flips"}
        assert rules["halving"]["validation_passes"] < rules["today"]["validation_passes"]
        assert rules["flips"]["validation_passes"] < rules["reference"]["validation_passes"]
        assert rules["reference"]["accuracy"] == rules["today"]["accuracy"]  # same points, shared blocks
    assert "| pairs | halving |" in (tmp_path / "profile.md").read_text()
    assert "| pairs | flips |" in (tmp_path / "profile.md").read_text()


def test_selection_equivalence_fast(tmp_path, one_thread):
    import json

    _script("analyses/selection_equivalence.py").main(["--fast", "--out", str(tmp_path / "se.md")])
    rows = json.loads((tmp_path / "se.json").read_text())
    assert [r["method"] for r in rows] == ["caa", "label_caa", "expertsteer_label"]
    assert all("difference_items" in r and r["strategy"] == "flips" for r in rows)
    assert all(r["difference_items"] == r["new_items"] - r["reference_items"] for r in rows)
    text = (tmp_path / "se.md").read_text()
    assert "Rows differing by more than one item" in text and "the flips search vs the reference" in text
    assert "The rule (within one item on at least 80% of rows" in text
