"""The family checks of test_families.py on a CUDA GPU, plus device_map="auto" on the GPU(s).

Skipped where torch sees no CUDA device (as on the CPU-only machine these tests were written on:
they have not been run on a GPU yet).
"""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU here")

from test_families import *  # noqa: E402,F401,F403  the same tests, collected again with device below
from test_families import PROMPTS  # noqa: E402

import steer_lens as sl  # noqa: E402
from steer_lens.models import load_model  # noqa: E402
from steer_lens.tokens import batch_encode  # noqa: E402


@pytest.fixture(scope="module")
def device():
    return "cuda"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_device_map_auto_on_gpu(family_dirs, dtype):
    """accelerate places the model (over every visible GPU); inputs go to the embeddings' device
    and the logits equal the same model on one GPU."""
    spread = load_model(family_dirs["llama3"], device_map="auto", dtype=dtype)
    single = load_model(family_dirs["llama3"], device="cuda", dtype=dtype)
    assert str(spread.cfg.device).startswith("cuda")
    batch = batch_encode(spread, PROMPTS, chat_template=False)
    with torch.no_grad():
        a = spread(batch.tokens, attention_mask=batch.attention_mask)
        b = single(batch.tokens.to("cuda"), attention_mask=batch.attention_mask.to("cuda"))
    torch.testing.assert_close(a.to(b.device), b, atol=2e-2 if dtype == torch.bfloat16 else 1e-5, rtol=3e-2)
    assert sl.generate(spread, PROMPTS[0], max_new_tokens=4) == sl.generate(single, PROMPTS[0], max_new_tokens=4)
