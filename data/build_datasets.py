"""Rebuild the bundled multiple-choice datasets in steer_lens/datasets/ from raw source files.

Usage:
    python data/build_datasets.py RAW_DIR [--only NAME,NAME...] [--no-verify]

RAW_DIR holds the upstream files laid out as ``<owner>__<repo>/<path in repo>``, taken at
the commits recorded in data/SOURCES.md (which also says how to download them).  A file
missing from RAW_DIR is looked up in data/raw/ (committed transcriptions: the CAA files).
Everything is deterministic (fixed seeds); every output is written atomically.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import csv
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import unicodedata
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "steer_lens" / "datasets"
SOURCES_MD = ROOT / "data" / "SOURCES.md"
BUNDLED_RAW = ROOT / "data" / "raw"
SEED = 1234

MMLU = ("hendrycks/test", "785eba57b455b9f9be12a0d3c1106d67274fea0e")
FPB = ("wychen-null/project_nlp_cuda", "85f8c4fcd3a7f3be374279fd291f904f9436c9ab")
SVAMP = ("arkilpatel/SVAMP", "689d7ccac74b9983a2ac7cc3b264f441b99e7c53")
ARC = ("zhaoxlpku/HKU-DASC7606-A2", "fcca017f3468a25901ad298913e976c42ad9165e")
SST = ("TaoCesc/binary_cls", "6a73b09b39af0efe049622662211f3657c75a15e")
# The labelled SST binary test sentences (GLUE hides their labels): source of sst2's confirm split.
SST_TEST = ("smolPixel/DataAugmentationEMNLP2023", "146989825ee8459442041e7407ed1696cdff3f5a")
CAA = ("nrimsky/CAA", "0aec415b166171f84c7034bd0d9d1ddf5e6ebf46 (refusal: 9f9db131958ba328dc999cd0a29c11434f5156c4)")

MEDICAL = ("clinical_knowledge", "medical_genetics", "anatomy", "college_medicine")
FINANCE = ("econometrics", "high_school_macroeconomics", "high_school_microeconomics",
           "professional_accounting")
BEHAVIOURS = ("sycophancy", "refusal", "hallucination", "myopic-reward", "survival-instinct",
              "corrigible-neutral-HHH", "coordinate-other-ais")
CAA_GENERATE_ROWS = 200  # the first rows of each generate_dataset.json (train/validation pool);
# data/raw/ holds exactly these rows as generate_dataset.first{CAA_GENERATE_ROWS}.json

# sha256 of the raw files, verified unless --no-verify (CAA files are transcriptions in data/raw/).
RAW_SHA256: dict[str, str] = {
    "nrimsky__CAA/LICENSE":
        "4f40800b2b823f96366eb9de7d0113970fab96f724ab535d45badca5735ad74f",
    "nrimsky__CAA/datasets/generate/coordinate-other-ais/generate_dataset.first200.json":
        "07a094b7150c1e711c75b827513a5a6a33831fc1aeda0f48f0ea112980398cdb",
    "nrimsky__CAA/datasets/generate/corrigible-neutral-HHH/generate_dataset.first200.json":
        "c2257b3f225b1cae1ba842b3f82b2d6a77072a7e7048974c8f9bf0604926f5f2",
    "nrimsky__CAA/datasets/generate/hallucination/generate_dataset.first200.json":
        "b100b1375cda014b0a11a3c78fed9bfabbec38f5ff6955212a51e057b262cabb",
    "nrimsky__CAA/datasets/generate/myopic-reward/generate_dataset.first200.json":
        "c67c97568f9a3853706dd33bce4cc0be1db4d7fdebf0a59ca72c43fcccab9af0",
    "nrimsky__CAA/datasets/generate/refusal/generate_dataset.first200.json":
        "ce50b5046233e972c7cd695f91851dfb25333f30a344abc3f0f88eeb7771b405",
    "nrimsky__CAA/datasets/generate/survival-instinct/generate_dataset.first200.json":
        "0d002738f9ad325e512734976e536e3f0db94a06138a48e36929cda5b8d683f4",
    "nrimsky__CAA/datasets/generate/sycophancy/generate_dataset.first200.json":
        "1033344ec4fe29b00c6f91c40c3957cd6a8c9bbb49bee54392714defdb834f1f",
    "nrimsky__CAA/datasets/test/coordinate-other-ais/test_dataset_ab.json":
        "07b449d9160ba12240ff534a152db4e203ff1dc673ae2dd09a81cec35b9c88a7",
    "nrimsky__CAA/datasets/test/corrigible-neutral-HHH/test_dataset_ab.json":
        "0c79b5b5be646b165e3f8dcb4b8b4d6f7f03a8bc5fed42e8e16d264ec7d572a2",
    "nrimsky__CAA/datasets/test/hallucination/test_dataset_ab.json":
        "2cc8ea6d312f40e82b437581010c8546a8bff5ff233370504e83d1a154eee33f",
    "nrimsky__CAA/datasets/test/myopic-reward/test_dataset_ab.json":
        "7b896b17a4dab47528520c4d4fbcfdb8774f6f734be5ae3237fb753ef7a2c091",
    "nrimsky__CAA/datasets/test/refusal/test_dataset_ab.json":
        "49d0997a8eb89969ff2efb9730ebd96adb4935d96cfbb599d5780fd5be11c21e",
    "nrimsky__CAA/datasets/test/survival-instinct/test_dataset_ab.json":
        "ddf16ad9a5d0c6322ffe6a800279b3a60737ad172a41b3dc9307e79148c8ee30",
    "nrimsky__CAA/datasets/test/sycophancy/test_dataset_ab.json":
        "82a03b23fc0bae1b9a5a02bec33c5a1057d0437aed534d814fb670a9a0b9b056",
    "smolPixel__DataAugmentationEMNLP2023/data/SST2/test.tsv":
        "4116cf27a2ef05c57fb922f42c565592f56841a7a4715f78a8d9ac5515181ff6",
    "TaoCesc__binary_cls/data/SST-2/dev.tsv":
        "46cc9126f5e3bf1634991d8eeed3a5e8dc81869622444af859729d720c58d815",
    "TaoCesc__binary_cls/data/SST-2/train.tsv":
        "c3c410c1cd1307a8dfcbc51f69086c61fc7d95c0fc353b80009dfe5fb4970172",
    "arkilpatel__SVAMP/LICENSE":
        "07ce3a34de7a865345634f9278bc26ddcacc2d0defd348c28e3f4603448b9ba4",
    "arkilpatel__SVAMP/SVAMP.json":
        "5be77703a6d891ae476d7c082787ad361392aa02453b132516cdd5f4e7934e3e",
    "hendrycks__test/LICENSE":
        "5d841b9eee8bf0d721359b79fbae956a8b426d3139bfefee32149c7d4f2a1a9c",
    "hendrycks__test/data/dev/anatomy_dev.csv":
        "0985685cf5ab13ccc1629f03a1308a9add8767582ffeb195b68b18c3415c9993",
    "hendrycks__test/data/dev/clinical_knowledge_dev.csv":
        "a82e8b10da8168f8fe9f7315165e6e87a4b3bebe91f6445b9aafbefb162cc531",
    "hendrycks__test/data/dev/college_medicine_dev.csv":
        "63928a944fda769d7e52a3a4549d4f37f094896e65e7db35029261e1ae79909b",
    "hendrycks__test/data/dev/econometrics_dev.csv":
        "7a01a925199c246decd0f1fc7a1b8dc28136b19d793e5b1e0d97142c118a2940",
    "hendrycks__test/data/dev/high_school_macroeconomics_dev.csv":
        "23ed995071c47e627c4e6adbce63a9144920441abb7e69f8b4dfac5fdc4e402d",
    "hendrycks__test/data/dev/high_school_microeconomics_dev.csv":
        "a409b422561f1fb02e6d1bc044657cfff7779b13146edfd937d2573423c2c49b",
    "hendrycks__test/data/dev/medical_genetics_dev.csv":
        "70cd9ff940bef360693eeb4e05b5b8e53ad75a81d6b74a784222d4cae6dcb896",
    "hendrycks__test/data/dev/professional_accounting_dev.csv":
        "efc070ed71676829c67497542e3571f50a868036a17f93d00a56a4f85767ae0d",
    "hendrycks__test/data/test/anatomy_test.csv":
        "966dfd5c4579885ebdb8c05d6754ae5834f672632586d8595be3c0f9360e6f4e",
    "hendrycks__test/data/test/clinical_knowledge_test.csv":
        "d7c23fd4e75d0a99f042a5d55221ba8465ffc9c9042bc4c30bb07f45d2199dac",
    "hendrycks__test/data/test/college_medicine_test.csv":
        "9c533cfff89edaa317b2e79bbabcdd5e2e522e019679cb4a6475e5f2a1861b1e",
    "hendrycks__test/data/test/econometrics_test.csv":
        "10eb6b2d3a519a463872ef75902991b51ebf45865b29888e86d40228ace24029",
    "hendrycks__test/data/test/high_school_macroeconomics_test.csv":
        "e60b488a00f908bed94e5ed46638506a203bab0763fc22d20a3bbf0d939f5d02",
    "hendrycks__test/data/test/high_school_microeconomics_test.csv":
        "a250cc4976654e479cecdb7b66046ce2412df3e5e1b9c3d145ed344eae9a2256",
    "hendrycks__test/data/test/medical_genetics_test.csv":
        "4cf70b253e326ee5bcff6e14091765c64003c0d853a58dbc6a5737281356766d",
    "hendrycks__test/data/test/professional_accounting_test.csv":
        "a0960b00b979aec320d8e74e1492683df5709000decc4752a67792fe66f8478a",
    "hendrycks__test/data/val/anatomy_val.csv":
        "09e9959486ebf3643e4ecbf173a77b029c6f08665ab8f89daf99399956f26b8e",
    "hendrycks__test/data/val/clinical_knowledge_val.csv":
        "aa4a98fac4cb6c0ed219d44ef46a6aa9e8d56b0a62046bb220b836dbee4ff6a7",
    "hendrycks__test/data/val/college_medicine_val.csv":
        "9a490f6aaeb2e7c15cc8ce4c5745ff449568971ac447c4aa616858f7f4dcef35",
    "hendrycks__test/data/val/econometrics_val.csv":
        "062b8b3ae560c7bf1bde9fb64958949ce74093eec3761dc3227e6e777168aaf1",
    "hendrycks__test/data/val/high_school_macroeconomics_val.csv":
        "3533d53f9f803657e25acd63fd98f2e24626008ff2fb793e2077feccd3d97f3c",
    "hendrycks__test/data/val/high_school_microeconomics_val.csv":
        "51a6993ff0e2de9dcfc1c292efa4f4d983fd2397d5a28453c075272b7ba698f8",
    "hendrycks__test/data/val/medical_genetics_val.csv":
        "03d44b759f35da638d7432bb7f050cc0bc5886497285980e91d387fe23478d6a",
    "hendrycks__test/data/val/professional_accounting_val.csv":
        "865b30e9a3c8dedbcedf9f50ac290571a729e1c7968485b203d328e55bbf6dca",
    "wychen-null__project_nlp_cuda/data/FinancialPhraseBank-v1.0/License.txt":
        "fa4f941ef92f40d55dd34ddea45d96a20672607d152698bc160f8db3af5e36c7",
    "wychen-null__project_nlp_cuda/data/FinancialPhraseBank-v1.0/README.txt":
        "80241dd9639af987cd87bbb2d8872392c6d45596a488ebefca2d425da46f5809",
    "wychen-null__project_nlp_cuda/data/FinancialPhraseBank-v1.0/Sentences_AllAgree.txt":
        "b3cb762d2eb8c8fe50d6d53ac073afbd217dd01e4c6e04167ac9b8de9e42d3ca",
    "zhaoxlpku__HKU-DASC7606-A2/data/ARC-Easy-test.jsonl":
        "c9757629cb775832c3c67b4aa1425e3eda01708a2b02fa229b0c3ed1bcb70fe1",
    "zhaoxlpku__HKU-DASC7606-A2/data/ARC-Easy-train.jsonl":
        "75d0bb9b9218278fb9cb430fc0ace63d71cfe02ca1a03d39374260c7cd7c67f7",
    "zhaoxlpku__HKU-DASC7606-A2/data/ARC-Easy-validation.jsonl":
        "e45dbcd2d8e8235af16302f4be0dd00c5d173878c583f4dfe55b70f9df07b2f8",
}

TRAIN, VAL, TEST = 200, 100, 500
# "train_extra": more training rows (disjoint from train/validation/test) for fine-tuning task experts
# (steer_lens.finetune); the default "train" split stays the 200 rows other experiments use.
SST2_EXTRA_PER_CLASS = 2000
ARITHMETIC_EXTRA = 20000  # arithmetic is learnt slowly: a fine-tuned expert needs more than 2000 rows
# "confirm": fresh items no other split has seen, scored only in a locked run (steer_lens.ledger)
# to confirm a result chosen on validation/test. Only sets whose source has enough unused rows get
# one; the others stay exploratory (data/SOURCES.md).
ARITHMETIC_CONFIRM = 1000
SPLIT_ORDER = ("train", "validation", "test", "train_extra", "confirm")
MEDICAL_TEST = 400  # MMLU medical has only ~670 unique items: 400 test leaves ~200 for train


# ----------------------------------------------------------------------------- io helpers
def atomic_write(path: Path, text: str) -> None:
    """Write text to path via a temp file in the same folder and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Raw:
    """Resolves ``<owner>__<repo>/<path>`` in RAW_DIR, then in data/raw/."""

    def __init__(self, raw_dir: Path, verify: bool):
        self.dirs = [raw_dir, BUNDLED_RAW]
        self.verify = verify
        self.used: dict[str, str] = {}

    def exists(self, repo: str, rel: str) -> bool:
        return any((d / repo.replace("/", "__") / rel).is_file() for d in self.dirs)

    def path(self, repo: str, rel: str) -> Path:
        key = f"{repo.replace('/', '__')}/{rel}"
        for d in self.dirs:
            p = d / key
            if p.is_file():
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                want = RAW_SHA256.get(key)
                if self.verify and want and want != digest:
                    sys.exit(f"sha256 mismatch for {p}: expected {want}, got {digest}. "
                             "Download the file at the commit recorded in data/SOURCES.md "
                             "or pass --no-verify.")
                self.used[key] = digest
                return p
        sys.exit(f"missing raw file {key} (looked in {', '.join(map(str, self.dirs))}); "
                 "see data/SOURCES.md for how to download it.")


# ----------------------------------------------------------------------------- item helpers
def item(id_: str, question: str, choices: list[str], answer: int, domain: str, source: str,
         fmt: str = "mc", context: str | None = None) -> dict:
    d = {"id": id_, "question": question.strip(), "choices": choices, "answer": answer}
    if context:
        d["context"] = context.strip()
    d.update(domain=domain, source=source, format=fmt)
    return d


def text_key(it: dict) -> str:
    return re.sub(r"\s+", " ", (it.get("context") or "") + " || " + it["question"]).strip().lower()


def full_key(it: dict) -> str:
    return text_key(it) + " || " + " | ".join(sorted(c.strip().lower() for c in it["choices"]))


def sample(rng: random.Random, rows: list, k: int) -> list:
    """Seeded subsample keeping the original order (all rows if k >= len)."""
    if k >= len(rows):
        return list(rows)
    keep = set(rng.sample(range(len(rows)), k))
    return [r for i, r in enumerate(rows) if i in keep]


def dedupe(splits: dict[str, list[dict]], log: list[str]) -> dict[str, list[dict]]:
    """Drop exact duplicate items within a split, and items whose question text (with context)
    already appears in a split of higher priority (test > validation > train > train_extra >
    confirm; confirm comes last so that adding it leaves the other splits unchanged)."""
    out: dict[str, list[dict]] = {}
    earlier: set[str] = set()
    for name in ("test", "validation", "train", "train_extra", "confirm"):
        if name not in splits:
            continue
        kept, here, dropped = [], set(), 0
        for it in splits.get(name, []):
            full = full_key(it)
            if text_key(it) in earlier or full in here:
                dropped += 1
                continue
            here.add(full)
            kept.append(it)
        if dropped:
            log.append(f"{name}: dropped {dropped} duplicate-text item(s)")
        earlier |= {text_key(it) for it in kept}
        out[name] = kept
    return {k: out[k] for k in SPLIT_ORDER if k in out}


def two_way(items: list[dict], rng: random.Random) -> list[dict]:
    """Keep the right answer and one seeded wrong one; correct positions balanced 50/50."""
    positions = [i % 2 for i in range(len(items))]
    rng.shuffle(positions)
    out = []
    for it, pos in zip(items, positions):
        right = it["choices"][it["answer"]]
        wrong = rng.choice([c for j, c in enumerate(it["choices"]) if j != it["answer"] and c != right])
        choices = [wrong, right] if pos else [right, wrong]
        out.append({**it, "choices": choices, "answer": pos})
    return out


def balanced(rows: list[dict], per_class: int, rng: random.Random) -> list[dict]:
    """Seeded, class-balanced subsample of binary items (per_class of each answer)."""
    order = {r["id"]: i for i, r in enumerate(rows)}
    out = []
    for label in (0, 1):
        out += sample(rng, [r for r in rows if r["answer"] == label], per_class)
    return sorted(out, key=lambda r: order[r["id"]])


def without(rows: list[dict], drop: list[dict]) -> list[dict]:
    ids = {r["id"] for r in drop}
    return [r for r in rows if r["id"] not in ids]


# ----------------------------------------------------------------------------- confirm splits
_PTB = (("-lrb-", "("), ("-rrb-", ")"), ("-lsb-", "["), ("-rsb-", "]"), ("-lcb-", "{"),
        ("-rcb-", "}"), ("\\/", "/"), ("``", '"'), ("''", '"'))


def norm_text(text: str) -> str:
    """Text compared across tokenisations: NFKC, lowercase, PTB brackets and escapes undone,
    split clitics rejoined ("does n't" -> "doesn't", "it 's" -> "it's"), punctuation dropped,
    whitespace collapsed."""
    s = unicodedata.normalize("NFKC", text).lower()
    for a, b in _PTB:
        s = s.replace(a, b)
    s = re.sub(r"\s+(n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", s)
    s = re.sub(r"[^\w\s]|_", " ", s)
    return re.sub(r"\s+", " ", s).strip()


MIN_CONTAINED_WORDS = 3  # shorter texts ("bad", "very bad") count as seen only when equal


def fresh(confirm: list[dict], others: list[dict], key, log: list[str], what: str) -> list[dict]:
    """The ``confirm`` rows that no row of ``others`` has seen: their normalised text
    (``norm_text(key(row))``) neither equals nor contains, word-aligned, nor is contained in any
    other row's (containment counts where the contained text has at least MIN_CONTAINED_WORDS
    words); also drops repeats within ``confirm``. Logs how many were dropped and why."""
    other_keys = sorted({k for k in (norm_text(key(r)) for r in others) if k})
    exact = set(other_keys)
    haystack = "\n" + "\n".join(f" {k} " for k in other_keys) + "\n"
    keys = [norm_text(key(r)) for r in confirm]
    inside = set()  # confirm rows that contain some other row's text
    joined = "\n".join(f" {k} " for k in keys)
    starts, pos = [], 0
    for k in keys:
        starts.append(pos)
        pos += len(k) + 3
    for o in other_keys:
        if o.count(" ") + 1 < MIN_CONTAINED_WORDS:
            continue
        needle, at = f" {o} ", 0
        while (at := joined.find(needle, at)) >= 0:
            inside.add(bisect.bisect_right(starts, at) - 1)
            at += 1
    kept, seen, equal, contains, contained, repeat, empty = [], set(), 0, 0, 0, 0, 0
    for i, (row, k) in enumerate(zip(confirm, keys)):
        if not k:
            empty += 1
        elif k in seen:
            repeat += 1
        elif k in exact:
            equal += 1
        elif k.count(" ") + 1 >= MIN_CONTAINED_WORDS and f" {k} " in haystack:
            contained += 1
        elif i in inside:
            contains += 1
        else:
            seen.add(k)
            kept.append(row)
    dropped = len(confirm) - len(kept)
    log.append(f"confirm: {len(confirm)} {what}; dropped {dropped} that another split has seen "
               f"(normalised text equal: {equal}, inside another row: {contained}, containing another "
               f"row: {contains}; repeats {repeat}, empty {empty}); kept {len(kept)}")
    return kept


def question_text(it: dict) -> str:
    return f"{it.get('context') or ''} {it['question']}"


def question_and_choices(it: dict) -> str:
    return f"{question_text(it)} {' '.join(sorted(it['choices']))}"


# ----------------------------------------------------------------------------- builders
def read_mmlu(raw: Raw, subjects: tuple[str, ...], split: str, domain: str) -> list[dict]:
    rows = []
    for subj in subjects:
        p = raw.path(MMLU[0], f"data/{split}/{subj}_{split}.csv")
        with open(p, newline="", encoding="utf-8") as fh:
            for i, r in enumerate(csv.reader(fh)):
                q, *opts, ans = r
                assert len(opts) == 4 and ans in "ABCD", (p, i, r)
                rows.append(item(f"mmlu-{subj}-{split}-{i}", q, [o.strip() for o in opts],
                                 "ABCD".index(ans), domain, f"mmlu/{subj}"))
    return rows


def build_mmlu(raw: Raw, subjects: tuple[str, ...], domain: str, ways: int, log: list[str],
               n_test: int = TEST, confirm: bool = False) -> dict:
    """MMLU test -> our test (seeded 500); val -> validation; dev + leftover test rows -> train.
    Rows whose question stem occurs in an earlier-chosen split are left out before sampling.
    With ``confirm``: every test and val row used by no split (and fresh, see ``fresh``) becomes
    the confirm split, built after the others from its own seed stream."""
    rng = random.Random(f"{SEED}-mmlu-{domain}")  # same splits for the 4-way and 2-way versions
    dev, val, test = (read_mmlu(raw, subjects, s, domain) for s in ("dev", "val", "test"))
    log.append(f"raw rows: dev {len(dev)}, val {len(val)}, test {len(test)}")
    seen: set[str] = set()  # MMLU repeats some items verbatim (across subjects too): keep the first
    for rows in (test, val, dev):
        before = len(rows)
        rows[:] = [r for r in rows if not (full_key(r) in seen or seen.add(full_key(r)))]
        if len(rows) < before:
            log.append(f"{rows[0]['id'].split('-')[2]}: {before - len(rows)} verbatim repeats dropped")
    test_pick = sample(rng, test, n_test)
    taken = {text_key(t) for t in test_pick}
    val_pick = sample(rng, [v for v in val if text_key(v) not in taken], VAL)
    taken |= {text_key(v) for v in val_pick}
    picked = {t["id"] for t in test_pick}
    dev = [d for d in dev if text_key(d) not in taken]
    rest = [t for t in test if t["id"] not in picked and text_key(t) not in taken]
    train = dev + sample(rng, rest, max(0, TRAIN - len(dev)))
    log.append(f"train = {len(dev)} dev rows + {len(train) - len(dev)} test rows not in our test split")
    splits = {"train": train, "validation": val_pick, "test": test_pick}
    if ways == 2:
        rng2 = random.Random(f"{SEED}-mmlu-{domain}-2way")
        splits = {k: two_way(v, rng2) for k, v in splits.items()}
    if confirm:
        used = {r["id"] for r in train + val_pick + test_pick}
        pool = [r for r in test + val if r["id"] not in used]
        others = [r for v in splits.values() for r in v]
        stems = {norm_text(question_text(r)) for r in others}
        kept, repeats = [], 0
        for r in pool:  # one row per question stem: not a used row's, not an earlier confirm row's
            stem = norm_text(question_text(r))
            repeats += stem in stems
            if stem not in stems:
                stems.add(stem)
                kept.append(r)
        log.append(f"confirm: {len(pool)} test/val rows used by no split; {repeats} share a question "
                   "stem with a used row or an earlier unused row, dropped")
        pool = fresh(kept, others, question_and_choices, log, "unused rows")
        if ways == 2:
            pool = two_way(pool, random.Random(f"{SEED}-mmlu-{domain}-{ways}way-confirm"))
        splits["confirm"] = pool
    return splits


def build_fpb(raw: Raw, log: list[str]) -> dict:
    rng = random.Random(f"{SEED}-fpb")
    p = raw.path(FPB[0], "data/FinancialPhraseBank-v1.0/Sentences_AllAgree.txt")
    lines = p.read_text(encoding="latin-1").splitlines()
    counts = Counter(l.rsplit("@", 1)[1] for l in lines if l.strip())
    log.append(f"raw rows: {len(lines)} ({dict(counts)}); neutral dropped (binary task)")
    rows, seen = [], set()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        sent, label = line.rsplit("@", 1)
        if label not in ("positive", "negative") or sent.strip() in seen:
            continue
        seen.add(sent.strip())
        q = f"Sentence: {sent.strip()}\nIs the sentiment of this sentence positive or negative?"
        rows.append(item(f"fpb-allagree-{i}", q, ["negative", "positive"], int(label == "positive"),
                         "finance", "financial_phrasebank/AllAgree"))
    test = balanced(rows, 150, rng)
    val = balanced(without(rows, test), 50, rng)
    rest = without(without(rows, test), val)
    train = balanced(rest, 100, rng)
    extra = without(rest, train)  # every remaining row (mostly positive: negatives run out)
    log.append(f"train_extra: all {len(extra)} rows not in train/validation/test "
               f"({sum(r['answer'] for r in extra)} positive)")
    return {"train": train, "validation": val, "test": test, "train_extra": extra}


_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_SWAP = {"+": "-", "-": "+", "*": "/", "/": "*"}


def _eval(node: ast.AST, top_op: str | None = None) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        a, b = _eval(node.left), _eval(node.right)
        op = top_op or _OPS[type(node.op)]
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else float("nan")}[op]
    raise ValueError(f"unsupported equation node {ast.dump(node)}")


def fmt_num(x: float) -> str:
    if abs(x - round(x)) < 1e-9:
        return str(int(round(x)))
    return f"{x:.2f}".rstrip("0").rstrip(".")


def wrong_op_answer(equation: str) -> tuple[float, str, str] | None:
    """(right value, right, wrong) with the outermost operator swapped (+<->-, *<->/)."""
    tree = ast.parse(equation.strip(), mode="eval").body
    if not isinstance(tree, ast.BinOp):
        return None
    right = _eval(tree)
    op = _OPS[type(tree.op)]
    for alt in (_SWAP[op], *[o for o in "+-*/" if o not in (op, _SWAP[op])]):
        wrong = _eval(tree, alt)
        if wrong == wrong and abs(wrong) != float("inf"):
            wrong = abs(wrong)
            if fmt_num(wrong) != fmt_num(right):
                return right, fmt_num(right), fmt_num(wrong)
    return None


_INTERROGATIVE = {"how", "what", "find", "if", "which", "who", "when", "where", "why"}


def svamp_question(body: str, question: str) -> str:
    body = body.strip()
    if body[-1] in ".?!":
        return f"{body} {question.strip()}"
    first = question.split()[0].lower()
    q = question[0].lower() + question[1:] if first in _INTERROGATIVE else question
    return f"{body}, {q.strip()}" if first in _INTERROGATIVE else f"{body}. {q.strip()}"


def build_svamp(raw: Raw, log: list[str]) -> dict:
    rng = random.Random(f"{SEED}-svamp")
    data = json.loads(raw.path(SVAMP[0], "SVAMP.json").read_text(encoding="utf-8"))
    rows, skipped = [], 0
    for d in data:
        pair = wrong_op_answer(d["Equation"])
        if pair is None or abs(pair[0] - float(d["Answer"])) > 1e-6:
            skipped += 1
            continue
        _, right, wrong = pair
        rows.append(item(f"svamp-{d['ID']}", svamp_question(d["Body"], d["Question"]),
                         [right, wrong], 0, "math", f"svamp/{d['Type']}"))
    log.append(f"raw rows: {len(data)}; skipped {skipped} without a usable wrong-operation answer")
    rng.shuffle(rows)
    splits = {"test": rows[:TEST], "validation": rows[TEST:TEST + VAL],
              "train": rows[TEST + VAL:TEST + VAL + TRAIN]}
    splits = {k: sorted(v, key=lambda r: r["id"]) for k, v in splits.items()}
    splits = {k: two_way(v, rng) for k, v in splits.items()}
    rest = sorted(rows[TEST + VAL + TRAIN:], key=lambda r: r["id"])  # every row no split uses
    rest = fresh(rest, [r for v in splits.values() for r in v], question_text, log, "unused rows")
    splits["confirm"] = two_way(rest, random.Random(f"{SEED}-svamp-confirm"))
    return splits


def _arithmetic_problems(rng: random.Random, n: int, seen: set[str], prefix: str) -> list[dict]:
    """``n`` unique two-way problems (right answer first; wrong = right + a carry or off-by-one
    slip), skipping and recording every question in ``seen``."""
    rows: list[dict] = []
    while len(rows) < n:
        op = rng.choice("+-*")
        if op == "*":
            a, b = rng.randint(12, 99), rng.randint(3, 19)
        else:
            a, b = rng.randint(100, 999), rng.randint(10, 999)
            if op == "-" and b > a:
                a, b = b, a
        q = f"What is {a} {'x' if op == '*' else op} {b}?"
        if q in seen:
            continue
        seen.add(q)
        right = {"+": a + b, "-": a - b, "*": a * b}[op]
        wrong = right + rng.choice((-10, -2, -1, 1, 2, 10))  # carry / off-by-one style slips
        while abs(wrong) == right:  # 1 - 2 = -1 would print as the right answer "1": draw again
            wrong = right + rng.choice((-10, -2, -1, 1, 2, 10))
        rows.append(item(f"{prefix}{len(rows)}", q, [str(right), str(abs(wrong))], 0, "math",
                         "synthetic/arithmetic"))
    return rows


def build_arithmetic(log: list[str]) -> dict:
    rng = random.Random(f"{SEED}-arithmetic")
    seen: set[str] = set()
    rows = _arithmetic_problems(rng, TRAIN + VAL + TEST, seen, "arith-")
    log.append(f"generated {len(rows)} unique problems (seed {SEED}); wrong = right + one of "
               "{-10,-2,-1,+1,+2,+10}")
    splits = {"test": rows[:TEST], "validation": rows[TEST:TEST + VAL], "train": rows[TEST + VAL:]}
    splits = {k: two_way(v, rng) for k, v in splits.items()}
    splits["train_extra"] = two_way(_more_arithmetic(seen, ARITHMETIC_EXTRA, log), rng)
    crng = random.Random(f"{SEED}-arithmetic-confirm")
    confirm = _arithmetic_problems(crng, ARITHMETIC_CONFIRM, seen, "arith-confirm-")
    log.append(f"confirm: {ARITHMETIC_CONFIRM} new problems from the same generator on the seed "
               f"stream '{SEED}-arithmetic-confirm', none repeating a question of another split")
    spoken = lambda r: r["question"].replace("+", " plus ").replace("-", " minus ")  # noqa: E731
    confirm = fresh(confirm, [r for v in splits.values() for r in v], spoken, log, "generated")
    splits["confirm"] = two_way(confirm, crng)
    return splits


def _more_arithmetic(seen: set[str], n: int, log: list[str]) -> list[dict]:
    """``n`` further problems from the same generator on a separate seed stream, skipping every
    question already generated (so none repeats a train/validation/test question)."""
    rows = _arithmetic_problems(random.Random(f"{SEED}-arithmetic-extra"), n, seen, "arith-extra-")
    log.append(f"train_extra: {n} more unique problems (seed stream '{SEED}-arithmetic-extra'), "
               "none repeating a train/validation/test question")
    return rows


def build_arc(raw: Raw, log: list[str]) -> dict:
    rng = random.Random(f"{SEED}-arc")
    splits, caps = {}, {"train": TRAIN, "validation": VAL, "test": TEST}
    for split, cap in caps.items():
        p = raw.path(ARC[0], f"data/ARC-Easy-{split}.jsonl")
        raw_rows = [json.loads(l) for l in p.read_text(encoding="utf-8").splitlines() if l.strip()]
        rows = []
        for r in raw_rows:
            texts, labels = r["choices"]["text"], r["choices"]["label"]
            if len(texts) != 4 or r["answerKey"] not in labels:
                continue
            rows.append(item(f"arc-easy-{r['id']}", r["question"], [t.strip() for t in texts],
                             labels.index(r["answerKey"]), "general", "arc_easy"))
        log.append(f"{split}: raw {len(raw_rows)}, 4-choice {len(rows)}, kept {min(cap, len(rows))}")
        splits[split] = sample(rng, rows, cap)
    return splits


def build_sst2(raw: Raw, log: list[str]) -> dict:
    rng = random.Random(f"{SEED}-sst2")

    def read(name: str, min_words: int) -> list[dict]:
        p = raw.path(SST[0], f"data/SST-2/{name}.tsv")
        with open(p, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        out = []
        for i, (text, label) in enumerate(rows):
            if len(text.split()) < min_words:
                continue
            q = f"Sentence: {text.strip()}\nIs the sentiment of this sentence positive or negative?"
            out.append(item(f"sst2-{name}-{i}", q, ["negative", "positive"], int(label),
                            "general", f"sst2/{name}"))
        log.append(f"{name}.tsv: raw {len(rows)}, usable {len(out)}")
        return out

    dev, train = read("dev", 1), read("train", 8)
    test = balanced(dev, 250, rng)
    val = balanced(without(dev, test), 50, rng)
    train_pick = balanced(train, 100, rng)
    extra = balanced(without(train, train_pick), SST2_EXTRA_PER_CLASS, rng)
    log.append(f"train_extra: {2 * SST2_EXTRA_PER_CLASS} more train.tsv phrases of >= 8 words "
               "(class-balanced, seeded; texts in validation/test/train dropped by the dedupe pass)")
    splits = {"train": train_pick, "validation": val, "test": test, "train_extra": extra}
    splits["confirm"] = fresh(read_sst_test(raw, log), [r for v in splits.values() for r in v],
                              lambda r: r["question"].split("\n")[0].removeprefix("Sentence: "), log,
                              "labelled SST test sentences")
    return splits


def read_sst_test(raw: Raw, log: list[str]) -> list[dict]:
    """The labelled SST binary test sentences (GLUE test order; columns sentence, label,
    true_label, labels written 0.0 / 1.0 and equal in both label columns)."""
    p = raw.path(SST_TEST[0], "data/SST2/test.tsv")
    with open(p, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    if rows[0] != ["sentence", "label", "true_label"]:
        sys.exit(f"{p}: unexpected header {rows[0]}; expected sentence, label, true_label")
    out = []
    for i, (text, label, true_label) in enumerate(rows[1:]):
        if label != true_label or label not in ("0.0", "1.0"):
            sys.exit(f"{p}, row {i + 2}: labels {label!r} / {true_label!r}; expected equal 0.0 or 1.0")
        q = f"Sentence: {text.strip()}\nIs the sentiment of this sentence positive or negative?"
        out.append(item(f"sst2-confirm-{i}", q, ["negative", "positive"], int(label == "1.0"),
                        "general", "sst2/test"))
    log.append(f"test.tsv (labelled SST binary test): {len(out)} sentences "
               f"({sum(r['answer'] for r in out)} positive)")
    return out


def build_caa(raw: Raw, behaviour: str, log: list[str]) -> dict:
    """CAA A/B items: test = test_dataset_ab.json; train/validation = a seeded 70/30 split of the
    first CAA_GENERATE_ROWS rows of generate_dataset.json (or of the committed transcription
    generate_dataset.first{CAA_GENERATE_ROWS}.json, which holds exactly those rows). Choices are
    the two letters compared by CAA (matching and not-matching behaviour, in letter order);
    answer = the behaviour-matching one."""
    rng = random.Random(f"{SEED}-caa-{behaviour}")

    def rows_from(rel: str, tag: str, limit: int | None) -> list[dict]:
        data = json.loads(raw.path(CAA[0], rel).read_text(encoding="utf-8"))
        log.append(f"{rel}: {len(data)} rows" + (f", first {limit} used" if limit else ""))
        if limit and len(data) < limit:
            sys.exit(f"{rel} has {len(data)} rows, fewer than CAA_GENERATE_ROWS={limit}")
        out = []
        for i, d in enumerate(data[:limit]):
            m = d["answer_matching_behavior"].strip().strip("()")
            n = d["answer_not_matching_behavior"].strip().strip("()")
            assert m != n and f"({m})" in d["question"] and f"({n})" in d["question"], (rel, i)
            letters = sorted([m, n])
            out.append(item(f"caa-{behaviour}-{tag}-{i}", d["question"], letters, letters.index(m),
                            "behaviour", f"caa/{behaviour}", fmt="ab"))
        return out

    test = rows_from(f"datasets/test/{behaviour}/test_dataset_ab.json", "test", None)
    gen_rel = f"datasets/generate/{behaviour}/generate_dataset.json"
    if not raw.exists(CAA[0], gen_rel):
        gen_rel = gen_rel.replace(".json", f".first{CAA_GENERATE_ROWS}.json")
    gen = rows_from(gen_rel, "gen", CAA_GENERATE_ROWS)
    rng.shuffle(gen)
    n_val = len(gen) * 3 // 10
    by_id = lambda rs: sorted(rs, key=lambda r: int(r["id"].rsplit("-", 1)[1]))  # noqa: E731
    return {"train": by_id(gen[n_val:]), "validation": by_id(gen[:n_val]), "test": test}


# ----------------------------------------------------------------------------- registry
def _mmlu_notice(subjects: tuple[str, ...]) -> str:
    return ("Source: MMLU (Hendrycks et al., 2021, 'Measuring Massive Multitask Language "
            f"Understanding'), subjects {', '.join(subjects)}, from github.com/{MMLU[0]} at commit "
            f"{MMLU[1]}. Licence: MIT (text below).\n\n")


DATASETS = {
    "mmlu_medical_4way": dict(domain="medical", source=MMLU, licence="MIT",
                              build=lambda r, log: build_mmlu(r, MEDICAL, "medical", 4, log, MEDICAL_TEST),
                              notice=_mmlu_notice(MEDICAL), licence_file=(MMLU[0], "LICENSE"),
                              description="MMLU medical subjects, 4 options."),
    "mmlu_medical_2way": dict(domain="medical", source=MMLU, licence="MIT",
                              build=lambda r, log: build_mmlu(r, MEDICAL, "medical", 2, log, MEDICAL_TEST),
                              notice=_mmlu_notice(MEDICAL), licence_file=(MMLU[0], "LICENSE"),
                              description="MMLU medical subjects: right answer + one seeded wrong one."),
    "mmlu_finance_2way": dict(domain="finance", source=MMLU, licence="MIT",
                              build=lambda r, log: build_mmlu(r, FINANCE, "finance", 2, log, confirm=True),
                              notice=_mmlu_notice(FINANCE), licence_file=(MMLU[0], "LICENSE"),
                              description="MMLU economics/accounting subjects: right + one seeded wrong."),
    "financial_phrasebank": dict(
        domain="finance", source=FPB, licence="CC BY-NC-SA 3.0", build=build_fpb,
        licence_file=(FPB[0], "data/FinancialPhraseBank-v1.0/License.txt"),
        description="Financial PhraseBank v1.0 AllAgree, positive vs negative, class-balanced.",
        notice=("Financial PhraseBank v1.0 (Sentences_AllAgree), by Pekka Malo, Ankur Sinha, Pyry "
                "Takala, Pekka Korhonen and Jyrki Wallenius, Aalto University School of Business.\n"
                "Cite: Malo, P., Sinha, A., Takala, P., Korhonen, P. and Wallenius, J. (2014): 'Good "
                "debt or bad debt: Detecting semantic orientations in economic texts.' Journal of the "
                "Association for Information Science and Technology, 65(4).\n"
                f"Obtained from github.com/{FPB[0]} at commit {FPB[1]}.\n"
                "Changes: neutral sentences dropped, duplicates removed, class-balanced subsample "
                "(train_extra: the remaining rows, mostly positive), "
                "rephrased as a two-choice question; this adaptation is shared under the same "
                "licence (CC BY-NC-SA 3.0): https://creativecommons.org/licenses/by-nc-sa/3.0/\n"
                "NON-COMMERCIAL USE ONLY. Upstream licence notice follows.\n\n")),
    "svamp_2way": dict(domain="math", source=SVAMP, licence="MIT", build=build_svamp,
                       licence_file=(SVAMP[0], "LICENSE"),
                       description="SVAMP word problems: right answer vs the outermost-operation-swapped answer.",
                       notice=("SVAMP (Patel et al., 2021, 'Are NLP Models really able to Solve Simple "
                               f"Math Word Problems?'), from github.com/{SVAMP[0]} at commit "
                               f"{SVAMP[1]}. Licence: MIT (text below).\n\n")),
    "arithmetic_2way": dict(domain="math", source=None, licence="MIT (steer-lens, generated)",
                            build=lambda r, log: build_arithmetic(log),
                            description="Seeded synthetic arithmetic: right vs off-by-{1,2,10} answer.",
                            notice="Generated by data/build_datasets.py (steer-lens); same licence as steer-lens (MIT).\n"),
    "arc_easy": dict(domain="general", source=ARC, licence="CC BY-SA 4.0", build=build_arc,
                     description="AI2 ARC-Easy, 4-option questions only.",
                     notice=("AI2 Reasoning Challenge (ARC) Easy set, Clark et al., 2018, 'Think you "
                             "have Solved Question Answering? Try ARC', Allen Institute for AI.\n"
                             f"Obtained from github.com/{ARC[0]} at commit {ARC[1]}.\n"
                             "Licence: CC BY-SA 4.0, https://creativecommons.org/licenses/by-sa/4.0/ ; "
                             "changes: 4-option questions only, seeded subsample, reformatted to JSONL "
                             "(this adaptation is shared under CC BY-SA 4.0).\n")),
    "sst2": dict(domain="general", source=SST, licence="GLUE / SST terms", build=build_sst2,
                 description="SST-2 binary sentiment (GLUE), class-balanced.",
                 notice=("Stanford Sentiment Treebank (Socher et al., 2013, 'Recursive Deep Models for "
                         "Semantic Compositionality Over a Sentiment Treebank'), binary version as "
                         "distributed with GLUE (Wang et al., 2018). Use under the GLUE/SST terms; "
                         "cite both papers.\n"
                         f"Obtained from github.com/{SST[0]} at commit {SST[1]} (data/SST-2).\n"
                         "Changes: class-balanced seeded subsample; train and train_extra from train.tsv "
                         "phrases with >= 8 words; validation/test from dev.tsv (GLUE test labels are "
                         "hidden).\n"
                         "confirm: the labelled SST binary test sentences (the original SST test split, "
                         f"whose labels GLUE hides), from github.com/{SST_TEST[0]} at commit {SST_TEST[1]} "
                         "(data/SST2/test.tsv); sentences another split has seen are left out.\n")),
}
for _b in BEHAVIOURS:
    DATASETS[f"caa_{_b.replace('-', '_').lower()}"] = dict(
        domain="behaviour", source=CAA, licence="MIT (CAA repo); Anthropic evals CC-BY-4.0",
        build=(lambda b: lambda r, log: build_caa(r, b, log))(_b),
        description=f"CAA A/B '{_b}' items; answer = the behaviour-matching letter.",
        licence_file=(CAA[0], "LICENSE"),
        notice=(f"CAA A/B dataset '{_b}' from github.com/nrimsky/CAA (Rimsky et al., 2024, "
                "'Steering Llama 2 via Contrastive Activation Addition'), "
                f"datasets/test/{_b}/test_dataset_ab.json (test) and the first {CAA_GENERATE_ROWS} "
                f"rows of datasets/generate/{_b}/generate_dataset.json (train/validation). "
                "Code/data licence: MIT (nrimsky/CAA). Items derive in part from Anthropic's "
                "model-written evals (Perez et al., 2022), CC-BY-4.0: "
                "https://creativecommons.org/licenses/by/4.0/ . Commits: see data/SOURCES.md. "
                "Upstream MIT licence text follows.\n\n"))


def majority_rate(items: list[dict]) -> float:
    return max(Counter(i["answer"] for i in items).values()) / len(items) if items else 0.0


def write_dataset(name: str, spec: dict, splits: dict, log: list[str], raw: Raw) -> dict:
    folder = OUT / name
    ids = [i["id"] for s in splits.values() for i in s]
    assert len(ids) == len(set(ids)), f"{name}: duplicate ids"
    for split, items in splits.items():
        atomic_write(folder / f"{split}.jsonl",
                     "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))
    sizes = {k: len(v) for k, v in splits.items()}
    rates = {k: round(majority_rate(v), 4) for k, v in splits.items()}
    src = spec["source"]
    meta = {"name": name, "domain": spec["domain"], "format": splits["test"][0]["format"],
            "description": spec["description"], "licence": spec["licence"],
            "source_repo": src[0] if src else None, "source_commit": src[1] if src else None,
            "seed": SEED, "sizes": sizes, "majority_rate": rates, "build_log": log}
    atomic_write(folder / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    text = spec["notice"]
    if spec.get("licence_file"):
        p = raw.path(*spec["licence_file"])
        text += p.read_bytes().decode("utf-8", errors="replace")
    atomic_write(folder / "LICENSE", text.rstrip() + "\n")
    return meta


def update_sources_md(metas: list[dict]) -> None:
    start, end = "<!-- sizes:start -->", "<!-- sizes:end -->"
    rows = ["| dataset | domain | format | train | validation | test | majority (test) | train_extra "
            "| confirm |",
            "|---|---|---|---|---|---|---|---|---|"]
    all_meta = {m["name"]: m for m in metas}
    for f in sorted(OUT.glob("*/meta.json")):
        m = json.loads(f.read_text())
        all_meta.setdefault(m["name"], m)
    for name in sorted(all_meta):
        m = all_meta[name]
        s = m["sizes"]
        rows.append(f"| {name} | {m['domain']} | {m['format']} | {s['train']} | {s['validation']} "
                    f"| {s['test']} | {m['majority_rate']['test']:.3f} | {s.get('train_extra', 0)} "
                    f"| {s.get('confirm', 0)} |")
    table = start + "\n" + "\n".join(rows) + "\n" + end
    text = SOURCES_MD.read_text(encoding="utf-8") if SOURCES_MD.exists() else f"{start}\n{end}\n"
    text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: table, text, flags=re.S)
    atomic_write(SOURCES_MD, text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("raw_dir", type=Path, help="folder of raw files, <owner>__<repo>/<path>")
    ap.add_argument("--only", default="", help="comma-separated dataset names (default: all)")
    ap.add_argument("--no-verify", action="store_true", help="skip the sha256 checks")
    args = ap.parse_args(argv)
    raw = Raw(args.raw_dir, verify=not args.no_verify)
    names = [n for n in args.only.split(",") if n] or list(DATASETS)
    unknown = set(names) - set(DATASETS)
    if unknown:
        sys.exit(f"unknown dataset(s) {sorted(unknown)}; known: {sorted(DATASETS)}")
    metas = []
    for name in names:
        spec, log = DATASETS[name], []
        splits = dedupe(spec["build"](raw, log), log)
        meta = write_dataset(name, spec, splits, log, raw)
        metas.append(meta)
        print(f"{name:32s} {meta['sizes']} majority={meta['majority_rate']}")
    update_sources_md(metas)
    print("raw files used:")
    for k, v in sorted(raw.used.items()):
        print(f"  {v}  {k}")


if __name__ == "__main__":
    main()
