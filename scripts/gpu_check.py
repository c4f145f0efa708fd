"""The Python steps of scripts/gpu_check.sh (run that; it calls these in order).

``prepare``: install the carried wheels that the interpreter lacks into a target folder (pip
``--no-deps --no-index --target``; plain unzipping where the image has no pip), never touching
its torch or transformers, and link the import-only stand-ins of scripts/gpu_stubs for packages
still missing. Writes a JSON of what it did.

``report``: one JSON from the pieces (pytest's junit XML, the timing JSON, the prepare JSON,
versions and the device), a summary on stdout, and exit status 0 only when every check passed.
On a GPU a skipped test counts as a failure: every test there is meant to run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / "scripts" / "gpu_stubs"
STUBBED = ("datasets", "pandas", "matplotlib")  # import-only stand-ins, used where these are missing
DTYPES = ("float32", "bfloat16")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def top_level(whl: Path) -> set[str]:
    """The importable names a wheel installs (its top-level packages and modules)."""
    with zipfile.ZipFile(whl) as z:
        names = {n.split("/")[0] for n in z.namelist()}
    return {n.removesuffix(".py") for n in names
            if not n.endswith((".dist-info", ".data", ".pth")) and (n.endswith(".py") or "." not in n)}


def prepare(args) -> int:
    wheels_dir, site, stubs_dir = Path(args.wheels), Path(args.site), Path(args.stubs_dir)
    site.mkdir(parents=True, exist_ok=True)
    stubs_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
    info: dict = {"wheels_dir": str(wheels_dir), "site": str(site), "installed": [], "already_present": [],
                  "method": None, "skipped": None, "stubs": []}
    if not wheels:
        info["skipped"] = f"no wheels in {wheels_dir}/ (scripts/gpu_wheels.sh makes them)"
    else:
        todo = []
        for whl in wheels:
            name, version = whl.name.split("-")[:2]
            present = installed_version(norm(name))
            if present is None or not all(importlib.util.find_spec(m) for m in top_level(whl)):
                todo.append(whl)
                info["installed"].append(f"{norm(name)}=={version}")
            else:
                info["already_present"].append(f"{norm(name)}=={present} (carried {version})")
        if todo and importlib.util.find_spec("pip") is not None:
            info["method"] = "pip install --no-deps --no-index --target"
            subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
                            "--no-index", "--target", str(site), *map(str, todo)], check=True)
        elif todo:  # wheels are zip files whose top level is what goes into site-packages
            info["method"] = "unzip (the interpreter has no pip)"
            for whl in todo:
                with zipfile.ZipFile(whl) as z:
                    z.extractall(site)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    for name in STUBBED:
        if args.stubs == "all" or (args.stubs == "auto" and importlib.util.find_spec(name) is None):
            link = stubs_dir / name
            if not link.exists():
                link.symlink_to(STUBS / name, target_is_directory=True)
            info["stubs"].append(name)
    Path(args.out).write_text(json.dumps(info, indent=2) + "\n")
    print("install:", info["skipped"] or f"{len(info['installed'])} wheels installed "
          f"({', '.join(info['installed']) or 'none'}), {len(info['already_present'])} already present")
    print("import-only stand-ins:", ", ".join(info["stubs"]) or "none")
    return 0


def junit_counts(path: Path, mode: str) -> dict:
    """passed / failed / errors / skipped from pytest's junit XML, per dtype for the family tests."""
    out = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "total": 0,
           "passed_by_dtype": {d: 0 for d in DTYPES}, "failed_ids": [], "skipped_ids": []}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        out["total"] += 1
        tags = {child.tag for child in case}
        if "failure" in tags:
            out["failed"] += 1
            out["failed_ids"].append(test_id)
        elif "error" in tags:
            out["errors"] += 1
            out["failed_ids"].append(test_id)
        elif "skipped" in tags:
            out["skipped"] += 1
            out["skipped_ids"].append(test_id)
        else:
            out["passed"] += 1
            # the family tests of the mode's device: test_cuda on a GPU, test_families on the CPU
            if (mode == "gpu") == ("test_cuda" in test_id):
                for d in DTYPES:
                    if re.search(rf"[\[-]{d}[\]-]", case.get("name", "")):
                        out["passed_by_dtype"][d] += 1
    if mode == "cpu":  # test_cuda.py is skipped without a GPU; show it collected, not each id
        cuda = [t for t in out["skipped_ids"] if "test_cuda" in t]
        out["skipped_ids"] = [t for t in out["skipped_ids"] if "test_cuda" not in t]
        out["skipped_no_gpu"] = len(cuda)
    return out


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "transformer-lens", "accelerate", "jaxtyping", "beartype", "einops",
                 "safetensors", "pytest"):
        out[dist] = installed_version(dist)
    try:
        import torch

        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    except ImportError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    out["steer_lens_commit"] = commit or None  # the device gets a copy without .git
    return out


def device_info(mode: str) -> dict:
    out = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        import torch
    except ImportError:
        return out
    if mode == "gpu":
        out["gpus"] = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out["gpus"].append({"name": p.name, "memory_gib": round(p.total_memory / 2 ** 30, 1),
                                "capability": f"{p.major}.{p.minor}"})
        out["name"] = out["gpus"][0]["name"] if out["gpus"] else None
    else:
        out["name"] = "cpu"
    return out


def report(args) -> int:
    mode = args.mode
    problems: list[str] = []
    result: dict = {"mode": mode, "tiny": args.tiny, "ok": False, "problems": problems}
    if mode == "cpu":
        result["note"] = ("CPU mode: no CUDA GPU was used (torch sees none, or --cpu was given); the checks ran on "
                          "the CPU at small sizes. This is not a GPU check.")
    result["device"] = device_info(mode)
    result["versions"] = versions()
    install = Path(args.install)
    result["install"] = json.loads(install.read_text()) if install.exists() else None
    if result["install"] is None:
        problems.append("the install step wrote nothing (see the log)")
    if args.import_rc:
        problems.append(f"importing steer_lens and transformer_lens failed (exit {args.import_rc}; see the log)")

    tests: dict = {"command": args.pytest_command, "exit_status": args.pytest_rc}
    junit = Path(args.junit)
    if args.import_rc:
        problems.append("the tests and the timing did not run")
    elif junit.exists():
        tests.update(junit_counts(junit, mode))
        if tests["failed"] or tests["errors"]:
            problems.append(f"{tests['failed'] + tests['errors']} tests failed: {', '.join(tests['failed_ids'][:10])}")
        if mode == "gpu" and tests["skipped"]:
            problems.append(f"{tests['skipped']} tests skipped on the GPU (every test must run there): "
                            f"{', '.join(tests['skipped_ids'][:10])}")
        if tests["passed"] == 0:
            problems.append("no test passed")
        if not args.tiny:
            for d, n in tests["passed_by_dtype"].items():
                if n == 0:
                    problems.append(f"no family test passed in {d} on the {mode.upper()}")
    else:
        problems.append("pytest wrote no junit XML (it did not run, crashed or timed out; see the log)")
    if args.import_rc:
        pass
    elif args.pytest_rc == 124:
        problems.append("pytest timed out (GPU_CHECK_TEST_TIMEOUT)")
    elif args.pytest_rc not in (0, None) and not problems:
        problems.append(f"pytest exited with status {args.pytest_rc}")
    result["tests"] = tests

    timing = Path(args.timing)
    result["timing"] = json.loads(timing.read_text()) if timing.exists() else None
    if args.import_rc:
        pass
    elif result["timing"] is None:
        problems.append(f"the timing wrote nothing (exit {args.timing_rc}"
                        f"{', timed out: GPU_CHECK_TIMING_TIMEOUT' if args.timing_rc == 124 else ''}; see the log)")
    elif not result["timing"]["checks"]["logits_finite"]:
        problems.append("the timing model's logits are not finite")
    result["seconds"] = {k: float(v) for k, v in (s.split("=") for s in args.seconds)}
    result["ok"] = not problems
    result["written"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    t = result["tests"]
    print(f"\n== steer-lens GPU check: mode {mode.upper()}{' (tiny)' if args.tiny else ''} on "
          f"{result['device'].get('name')}")
    if mode == "cpu":
        print("   " + result["note"])
    if "passed" in t:
        extra = f", {t['skipped_no_gpu']} CUDA tests skipped (no GPU)" if mode == "cpu" else ""
        print(f"   tests: {t['passed']} passed, {t['failed'] + t['errors']} failed, {t['skipped']} skipped{extra}; "
              f"passed per dtype {t['passed_by_dtype']}")
    if result["timing"]:
        tm = result["timing"]
        print(f"   timing ({tm['shape']['name']}, d_model {tm['shape']['d_model']}, {tm['dtype']}): "
              + ", ".join(f"{k} {v}" for k, v in tm["ratios"].items()))
    for p in problems:
        print(f"   PROBLEM: {p}")
    print(f"   {'OK' if result['ok'] else 'FAILED'} -> {args.out}")
    return 0 if result["ok"] else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="step", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("--wheels", required=True)
    a.add_argument("--site", required=True)
    a.add_argument("--stubs-dir", required=True)
    a.add_argument("--stubs", choices=["auto", "all", "none"], default="auto")
    a.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("--mode", choices=["gpu", "cpu"], required=True)
    r.add_argument("--tiny", action="store_true")
    r.add_argument("--install", required=True)
    r.add_argument("--import-rc", type=int, default=0)
    r.add_argument("--junit", required=True)
    r.add_argument("--pytest-rc", type=int, default=None)
    r.add_argument("--pytest-command", default=None)
    r.add_argument("--timing", required=True)
    r.add_argument("--timing-rc", type=int, default=None)
    r.add_argument("--seconds", nargs="*", default=[], help="name=seconds pairs")
    r.add_argument("--out", required=True)
    args = p.parse_args(argv)
    return prepare(args) if args.step == "prepare" else report(args)


if __name__ == "__main__":
    sys.exit(main())
