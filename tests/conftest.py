"""Shared fixtures: tiny random-weight models (built once per session) and real models."""

import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# test scorings of test splits go to a scratch ledger, never the committed results/ledger.jsonl; set here, at
# import, so that subprocesses (the CLI tests) inherit it too
os.environ.setdefault("STEER_LENS_LEDGER", os.path.join(tempfile.mkdtemp(prefix="steer_lens_ledger_"), "ledger.jsonl"))


def pytest_configure(config):
    """pytest-xdist workers share the cores: each gets its share of torch threads (OpenMP threads beyond
    the cores spin against each other's); subprocesses started by tests inherit it through the
    environment. A thread count the caller set (OMP_NUM_THREADS) is kept."""
    import torch

    if getattr(config.option, "numprocesses", None) and "PYTEST_XDIST_WORKER" not in os.environ:
        return  # the xdist controller runs no test; its workers inherit its environment
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    threads = os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    os.environ.setdefault("MKL_NUM_THREADS", threads)
    torch.set_num_threads(int(threads))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from steer_lens.testing import make_tiny_model

    return {
        "llama": make_tiny_model(tmp_path_factory.mktemp("tiny_llama"), "llama", d_model=64, n_layers=4),
        "gemma3": make_tiny_model(tmp_path_factory.mktemp("tiny_gemma"), "gemma3", d_model=48, n_layers=3, seed=1),
    }


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    """Tiny random-weight llama3, qwen2, gemma2, gemma3, mistral and phi3 folders (d_model 32/48,
    2 layers), built once per session; see steer_lens.testing.make_families."""
    from steer_lens.testing import make_families

    return make_families(tmp_path_factory.mktemp("families"))


@pytest.fixture(scope="session")
def tiny_llama(tiny_dir):
    from steer_lens.models import load_model

    return load_model(tiny_dir["llama"])


@pytest.fixture(scope="session")
def tiny_gemma(tiny_dir):
    from steer_lens.models import load_model

    return load_model(tiny_dir["gemma3"])


@pytest.fixture(params=["llama", "gemma3"])
def tiny_model(request, tiny_llama, tiny_gemma):
    return tiny_llama if request.param == "llama" else tiny_gemma


@pytest.fixture(scope="session")
def smollm2():
    from steer_lens.models import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma():
    from steer_lens.models import load_model

    return load_model("gemma-3-270m")


@pytest.fixture
def one_thread():
    """Tiny problems: one torch thread avoids OpenMP stalls when other jobs share the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
