"""Confirm splits: fresh items (disjoint from every other split, also after normalisation and
by containment), sizes as documented, and scored only inside ledger.locked_run."""

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from steer_lens import ledger
from steer_lens.data import Item, MCDataset, load_dataset
from steer_lens.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[2]
CONFIRM_SETS = {"sst2", "mmlu_finance_2way", "svamp_2way", "arithmetic_2way"}


def _build_module():
    spec = importlib.util.spec_from_file_location("build_datasets", ROOT / "data" / "build_datasets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build = _build_module()


def test_norm_text_undoes_tokenisation_differences():
    n = build.norm_text
    assert n("it 's -lrb- not -rrb- bad , is n't it ?") == n("It's (not) bad, isn't it?") == "it s not bad isn t it"
    assert n("writer\\/director  ``x''") == n('writer/director "x"')
    assert n("ca n't") == n("can't")


def test_fresh_drops_seen_rows_and_logs_them():
    rows = lambda texts: [{"question": t, "choices": ["a", "b"]} for t in texts]  # noqa: E731
    others = rows(["a truly great film", "bad", "the plot is thin and the acting worse"])
    confirm = rows(["A truly great film .", "the plot is thin", "bad", "not bad at all",
                    "sadly the plot is thin and the acting worse , alas", "something new", "something new"])
    log = []
    kept = build.fresh(confirm, others, lambda r: r["question"], log, "rows")
    assert [r["question"] for r in kept] == ["not bad at all", "something new"]
    assert "dropped 5" in log[-1] and "equal: 2" in log[-1] and "repeats 1" in log[-1]


@pytest.mark.parametrize("name", sorted(CONFIRM_SETS))
def test_bundled_confirm_split_is_fresh(name):
    ds = load_dataset(name)
    confirm = ds.split("confirm")
    assert len(confirm) == ds.metadata["sizes"]["confirm"] >= 150
    assert 0.45 <= ds.majority_rate("confirm") <= 0.55
    key = (lambda it: it.question) if name != "mmlu_finance_2way" else \
        (lambda it: f"{it.question} {' '.join(sorted(it.choices))}")
    if name == "arithmetic_2way":
        key = lambda it: it.question.replace("+", " plus ").replace("-", " minus ")  # noqa: E731
    if name == "sst2":
        key = lambda it: it.question.split("\n")[0].removeprefix("Sentence: ")  # noqa: E731
    others = [it for s, items in ds.splits.items() if s != "confirm" for it in items]
    assert not {it.id for it in confirm} & {it.id for it in others}
    other_keys = {build.norm_text(key(it)) for it in others}
    hay = "\n" + "\n".join(f" {k} " for k in other_keys) + "\n"
    for it in confirm:
        k = build.norm_text(key(it))
        assert k not in other_keys, it.id
        if k.count(" ") + 1 >= build.MIN_CONTAINED_WORDS:
            assert f" {k} " not in hay, it.id
    if name == "sst2":  # no long other sentence inside a confirm sentence either
        joined = "\n".join(f" {build.norm_text(key(it))} " for it in confirm)
        assert not [k for k in other_keys if k.count(" ") + 1 >= build.MIN_CONTAINED_WORDS
                    and f" {k} " in joined]


def test_sets_without_enough_unused_rows_have_no_confirm_split():
    from steer_lens.data import list_datasets

    for name in list_datasets():
        assert ("confirm" in load_dataset(name).splits) == (name in CONFIRM_SETS), name
    text = (ROOT / "data" / "SOURCES.md").read_text(encoding="utf-8")
    assert "stay exploratory" in text


# ----------------------------------------------------------------------------- locked runs
def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(cwd)})


@pytest.fixture()
def led(tmp_path, monkeypatch):
    path = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(ledger.ENV, str(path))
    return path


@pytest.fixture()
def prereg(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    p = repo / "prereg.md"
    p.write_text("Score caa at rule set abc on the confirm split; confirmed if p_holm < 0.05.\n")
    _git(repo, "add", "prereg.md")
    _git(repo, "commit", "-q", "-m", "preregistration")
    return p


def _toy():
    items = [Item(f"c{i}", f"Q{i}?", ["yes", "no"], i % 2, "general", "unit") for i in range(4)]
    return MCDataset("toy", {"test": items[:2], "confirm": items})


def test_confirm_is_refused_outside_a_locked_run(tiny_llama, led):
    with pytest.raises(ledger.ConfirmLockedError, match="outside a locked run.*locked_run"):
        evaluate(tiny_llama, _toy(), split="confirm")
    bundled = load_dataset("sst2").split("confirm")[:2]  # the items themselves, as a list
    with pytest.raises(ledger.ConfirmLockedError, match="'sst2'"):
        evaluate(tiny_llama, bundled)
    assert ledger.read(led) == []


def test_locked_run_allows_confirm_and_records_it(tiny_llama, led, prereg):
    with ledger.locked_run("abc", prereg) as lock:
        assert len(lock.commit) == 40
        with ledger.scoring(method="caa"):
            evaluate(tiny_llama, _toy(), split="confirm")
            evaluate(tiny_llama, load_dataset("sst2"), split="confirm", limit=2)
    (line, line2) = ledger.read(led)
    assert (line["split"], line["method"], line["rule_set"], line["locked"]) == ("confirm", "caa", "abc", True)
    assert line["preregistration_commit"] == lock.commit and line["n"] == 4
    assert (line2["dataset"], line2["n"]) == ("sst2", 2)
    with pytest.raises(ledger.ConfirmLockedError):  # the lock ends with its block
        evaluate(tiny_llama, _toy(), split="confirm")


def test_locked_run_checks_the_preregistration(tmp_path, prereg):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with ledger.locked_run("abc", tmp_path / "missing.md"):
            pass
    loose = prereg.parent / "loose.md"
    loose.write_text("not committed")
    with pytest.raises(ledger.ConfirmLockedError, match="not committed"):
        with ledger.locked_run("abc", loose):
            pass
    prereg.write_text("edited after the commit")
    with pytest.raises(ledger.ConfirmLockedError, match="changes not committed"):
        with ledger.locked_run("abc", prereg):
            pass


def test_locked_run_with_the_git_check_patched(tmp_path, monkeypatch, tiny_llama, led):
    p = tmp_path / "p.md"
    p.write_text("x")
    monkeypatch.setattr(ledger, "git_commit_of", lambda path: "f" * 40)
    monkeypatch.setattr(ledger, "git_dirty", lambda path: False)
    with ledger.locked_run("r1", p):
        with pytest.raises(ValueError, match="scores under the rule set it names"):
            with ledger.scoring(method="caa", rule_set="other"):
                pass
        with pytest.raises(ledger.ConfirmLockedError, match="one locked run at a time"):
            with ledger.locked_run("r2", p):
                pass
        evaluate(tiny_llama, _toy(), split="confirm")
    assert ledger.read(led)[0]["rule_set"] == "r1"


def test_confirm_power_table_is_current():
    spec = importlib.util.spec_from_file_location("confirm_power", ROOT / "data" / "confirm_power.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = (ROOT / "data" / "confirm_power.md").read_text(encoding="utf-8")
    for name in sorted(CONFIRM_SETS):
        n = len(load_dataset(name).split("confirm"))
        assert f"| {name} | {n} |" in text
    assert json.loads(json.dumps(mod.DISCORDANCE))  # the assumptions are plain numbers


def _git_out(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def test_confirm_rows_follow_the_committed_preregistration():
    """Every confirm scoring in the committed ledger and every confirm row was made under the rule set the
    preregistration locks, by a locked run naming the preregistration's commit, after that commit, and the
    preregistration has not changed since."""
    import re
    from datetime import datetime

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    prereg = ROOT / "results" / "PREREGISTRATION.md"
    plan = json.loads(re.findall(r"```json\n(.*?)\n```", prereg.read_text(encoding="utf-8"), flags=re.S)[0])
    history = _git_out("log", "--format=%H %cI", "--", str(prereg.relative_to(ROOT))).splitlines()
    assert len(history) == 1, "the preregistration was edited after its commit"
    commit, committed_at = history[0].split()
    assert not _git_out("status", "--porcelain", "--", str(prereg.relative_to(ROOT)))
    lines = [ln for ln in ledger.read(ROOT / "results" / "ledger.jsonl") if ln["split"] == "confirm"]
    for ln in lines:
        assert ln["rule_set"] == plan["rule_set"] and ln.get("locked") is True, ln
        assert ln["preregistration_commit"] == commit, ln
        assert datetime.fromisoformat(ln["date"]) >= datetime.fromisoformat(committed_at), ln
    scored = {(ln["dataset"], ln["method"]) for ln in lines}
    for path in sorted((ROOT / "results" / "confirmation" / "cache").glob("*/*__*.json")):
        row = json.loads(path.read_text())
        assert row["rule_set"] == plan["rule_set"], path
        # strength 0 (calibration) reuses the unsteered row; calibration rows made before it wrote a line of its own
        # (steer_lens.methods.reference) have none
        assert (row["dataset"], row["method"]) in scored or row.get("strength") == 0, path
        added = _git_out("log", "--diff-filter=A", "--format=%H", "--", str(path.relative_to(ROOT)))
        if added:  # a committed row: its commit comes after the preregistration's
            assert subprocess.run(["git", "merge-base", "--is-ancestor", commit, added.splitlines()[-1]],
                                  cwd=ROOT).returncode == 0, path


def test_confirmation_runs_the_stages_and_datasets_asked_for(monkeypatch):
    """analyses/confirmation.py --stages/--datasets: the preregistered stages in their order, each on the
    asked datasets it names; confirm stages inside a locked run, test stages outside one."""
    import contextlib
    import sys

    sys.path.insert(0, str(ROOT / "analyses"))
    try:
        import confirmation
    finally:
        sys.path.remove(str(ROOT / "analyses"))
    calls, locked, shares = [], [], []

    class FakeBench:
        def __init__(self, split, share_test):
            self.split, self.share_test = split, share_test

        def run(self, datasets, methods):
            calls.append((self.split, list(datasets), list(methods), bool(locked)))
            shares.append(self.share_test)

    @contextlib.contextmanager
    def locked_run(rule_set, prereg):
        locked.append(rule_set)
        yield
        locked.pop()

    monkeypatch.setattr(confirmation, "bench", lambda p, split, target=None, expert=None, share_test=False:
                        FakeBench(split, share_test))
    monkeypatch.setattr("steer_lens.models.load_model", lambda name: name)
    monkeypatch.setattr(ledger, "locked_run", locked_run)
    p = confirmation.plan()
    confirmation.run(p, ["finetune", "test_finetune", "primary"], 1, ["sst2", "svamp_2way", "nope"])
    stage = {s["name"]: s for s in p["stages"]}
    assert calls == [("confirm", ["sst2"], stage["primary"]["methods"], True),
                     ("confirm", ["sst2", "svamp_2way"], ["finetune_target"], True),
                     ("test", ["sst2", "svamp_2way"], ["finetune_target"], False)]
    assert shares == [False, False, False]  # one evaluate per pass, as the first rows were scored
    calls.clear()
    confirmation.run(p, ["others_recorded"], 1, ["sst2"])  # a stage without the asked datasets: skipped
    assert calls == []
    # prompt + steering: test and confirm passes through the sweep, which runs the k-shot examples once
    confirmation.run(p, ["test_prompt_plus_steering", "prompt_plus_steering"], 1, ["sst2"])
    assert [c[0] for c in calls] == ["confirm", "test"] and shares[-2:] == [True, True]
