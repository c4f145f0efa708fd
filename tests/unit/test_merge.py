"""Merged-weights export on tiny models: the folded checkpoint's logits equal the hooked model's
(plain transformers in a process without steer_lens, and steer_lens.load_model), left padding
included; exactly the intended biases are non-zero; unfoldable plans and models are refused
before anything is written; the output folder is replaced atomically; the CLI."""

import json
import os
import subprocess
import sys

import pytest
import torch

from steer_lens.cli import main
from steer_lens.merge import CARD, bias_slot, merge_plan, merged_model, read_card
from steer_lens.models import load_model
from steer_lens.plan import LayerPairInfo, SteeringPlan

# resid_post 1 and resid_pre 2 share block 1's MLP bias (their vectors add); attn_out 2 is an
# attention-output bias; resid_post 3 is the last block, right before the final norm
HOOKS = ("blocks.1.hook_resid_post", "blocks.2.hook_resid_pre", "blocks.2.hook_attn_out",
         "blocks.3.hook_resid_post")
TEXTS = ["The movie was", "Answer: (A) yes (B) no"]


def make_plan(model, hooks=HOOKS, settings=None, seed=0) -> SteeringPlan:
    d, n = model.cfg.d_model, model.cfg.n_layers
    gen = torch.Generator().manual_seed(seed)
    vectors = {h: (v := torch.randn(d, generator=gen)) / v.norm() for h in hooks}
    return SteeringPlan(vectors=vectors, pairs=[LayerPairInfo(0, 1, 0.1)], mi=None, expert={"name": "e"},
                        target={"name": "tiny-llama", "d_model": d, "n_layers": n},
                        norms={h: 2.0 + i for i, h in enumerate(hooks)}, settings=settings or {},
                        data_hash="abc")


def encode(model, texts):
    """Left-padded ids and mask with the model's own pad token (both texts differ in length)."""
    tok = model.tokenizer
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def hooked_logits(model, plan, strength, ids, mask):
    with torch.no_grad(), plan.apply(model, strength):
        return model(ids, attention_mask=mask).float()


def test_merged_logits_equal_hooked_in_plain_transformers(tiny_llama, tmp_path, one_thread):
    plan = make_plan(tiny_llama)
    ids, mask = encode(tiny_llama, TEXTS)
    want = hooked_logits(tiny_llama, plan, 0.7, ids, mask)
    with torch.no_grad():
        base = tiny_llama(ids, attention_mask=mask)
    assert (want - base).abs().max() > 0.1  # the plan really moves the logits
    out = merge_plan(tiny_llama, plan, 0.7, tmp_path / "merged")
    torch.save({"ids": ids, "mask": mask}, tmp_path / "inputs.pt")
    code = (  # a process that never imports steer_lens
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"out, io = {str(out)!r}, {str(tmp_path)!r}\n"
        "model = AutoModelForCausalLM.from_pretrained(out).eval()\n"
        "AutoTokenizer.from_pretrained(out)\n"
        "x = torch.load(io + '/inputs.pt')\n"
        "with torch.no_grad():\n"
        "    torch.save(model(x['ids'], attention_mask=x['mask']).logits, io + '/logits.pt')\n"
        "assert not any(m.startswith('steer_lens') for m in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    got = torch.load(tmp_path / "logits.pt")
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-4, rtol=0)
    reloaded = load_model(out)  # and through steer-lens, as a TransformerBridge
    with torch.no_grad():
        again = reloaded(ids, attention_mask=mask)
    torch.testing.assert_close(again[real], want[real], atol=1e-4, rtol=0)


@pytest.mark.parametrize("strength", [0.0, -1.3])
def test_bias_values_and_untouched_weights(tiny_llama, strength, one_thread):
    plan = make_plan(tiny_llama)
    merged, slots = merged_model(tiny_llama, plan, strength)
    assert merged.config.mlp_bias and merged.config.attention_bias
    assert slots == {"model.layers.1.mlp.down_proj.bias": list(HOOKS[:2]),
                     "model.layers.2.self_attn.o_proj.bias": [HOOKS[2]],
                     "model.layers.3.mlp.down_proj.bias": [HOOKS[3]]}
    want = {name: sum(strength * plan.norms[h] * plan.vectors[h] for h in hooks) for name, hooks in slots.items()}
    params = dict(merged.named_parameters())
    for name, p in params.items():
        if name.endswith(".bias"):
            torch.testing.assert_close(p.detach(), torch.as_tensor(want.get(name, torch.zeros_like(p))).float(),
                                       atol=1e-6, rtol=0)
    hf = {k.replace("._original_component", ""): v for k, v in tiny_llama.original_model.state_dict().items()}
    for name, p in params.items():
        if not name.endswith(".bias"):
            assert torch.equal(p.detach(), hf[name]), name
    if strength == 0.0:
        ids, mask = encode(tiny_llama, TEXTS[:1])
        with torch.no_grad():
            torch.testing.assert_close(merged(ids).logits, tiny_llama(ids), atol=1e-5, rtol=0)
    assert not hasattr(tiny_llama.original_model.config, "mlp_bias") or not tiny_llama.original_model.config.mlp_bias


def test_tokenizer_is_the_original_one(tiny_dir, tiny_llama, tmp_path):
    from transformers import AutoTokenizer

    out = merge_plan(tiny_llama, make_plan(tiny_llama), 0.5, tmp_path / "m")
    ours, theirs = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(tiny_dir["llama"])
    chat = [{"role": "user", "content": "Hi"}]
    assert ours("a b")["input_ids"] == theirs("a b")["input_ids"]  # the bridge's copy would add BOS
    assert ours.apply_chat_template(chat, tokenize=False) == theirs.apply_chat_template(chat, tokenize=False)
    card = read_card(out)
    assert card["strength"] == 0.5 and card["plan"]["hooks"] == list(HOOKS) and card["plan"]["data_hash"] == "abc"


@pytest.mark.parametrize("change, message", [
    (dict(positions="prompt"), "positions 'prompt'"),
    (dict(positions="generated"), "positions 'generated'"),
    (dict(settings={"mode": "field"}), "'field' mode"),
    (dict(settings={"positions": "generated"}), "positions 'generated'"),
    (dict(hooks=("blocks.1.hook_resid_mid",)), "ln2.hook_in"),
    (dict(hooks=("blocks.0.hook_resid_pre",)), "embedding output"),
    (dict(hooks=("blocks.1.attn.hook_z",)), "only blocks.L.hook_resid_post"),
    (dict(norms={}), "stores no norm"),
    (dict(strength=float("nan")), "strength must be a finite number"),
])
def test_unfoldable_plans_are_refused_and_nothing_is_written(tiny_llama, tmp_path, change, message):
    plan = make_plan(tiny_llama, hooks=change.get("hooks", HOOKS), settings=change.get("settings"))
    if "norms" in change:
        plan.norms = change["norms"]
    with pytest.raises(ValueError, match=message):
        merge_plan(tiny_llama, plan, change.get("strength", 0.5), tmp_path / "m",
                   positions=change.get("positions", "all"))
    assert list(tmp_path.iterdir()) == []


def test_gemma_and_wrong_width_are_refused(tiny_gemma, tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="post_feedforward_layernorm"):
        merge_plan(tiny_gemma, make_plan(tiny_gemma), 0.5, tmp_path / "g")
    with pytest.raises(ValueError, match="d_model"):
        merge_plan(tiny_llama, make_plan(tiny_gemma), 0.5, tmp_path / "w")
    assert list(tmp_path.iterdir()) == []
    assert bias_slot("blocks.4.hook_resid_pre", 5) == ("mlp", 3)
    with pytest.raises(ValueError, match="has 4 layers"):
        bias_slot("blocks.4.hook_resid_post", 4)


def test_output_folder_rules(tiny_llama, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        merge_plan(tiny_llama, make_plan(tiny_llama), 0.5, other)
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
    out = merge_plan(tiny_llama, make_plan(tiny_llama), 0.5, tmp_path / "m")
    merge_plan(tiny_llama, make_plan(tiny_llama), 0.25, out)  # an earlier merge is replaced
    assert read_card(out)["strength"] == 0.25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "other"]  # no temp folders left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's owner-only mode
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o666 & ~umask}


def test_cli_merge(tiny_dir, tiny_llama, tmp_path, capsys):
    plan_dir = make_plan(tiny_llama).save(tmp_path / "plan")
    out = tmp_path / "merged"
    assert main(["merge", str(plan_dir), "--strength", "0.5", "--out", str(out), "--model",
                 str(tiny_dir["llama"]), "--json", "--threads", "1"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["out"] == str(out) and info["strength"] == 0.5 and (out / CARD).is_file()
    assert info["biases"]["model.layers.2.self_attn.o_proj.bias"] == ["blocks.2.hook_attn_out"]
    # the plan's recorded target name ("tiny-llama") is not loadable: ask for --model
    assert main(["merge", str(plan_dir), "--strength", "0.5", "--out", str(tmp_path / "x")]) == 2
    assert "pass --model" in capsys.readouterr().err
    bad = make_plan(tiny_llama, settings={"mode": "field"}).save(tmp_path / "field")
    assert main(["merge", str(bad), "--strength", "0.5", "--out", str(tmp_path / "x"),
                 "--model", str(tiny_dir["llama"])]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("steer-lens: error: cannot merge a plan in 'field' mode")
    assert not (tmp_path / "x").exists()
    assert main(["merge", "--help"]) == 0 and "example:" in capsys.readouterr().out


def test_llama3_untied_bos_family_and_unfoldable_families(family_dirs, tmp_path, one_thread):
    """Llama-3.1 layout (RoPE scaling, untied unembedding, a BOS-adding tokenizer) folds exactly;
    the families without a bias switch at both sublayer outputs (Qwen2, Mistral, Phi-3) or with
    norms after them (Gemma-2) are refused, naming their model_type."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = load_model(family_dirs["llama3"])
    plan = make_plan(model, hooks=("blocks.0.hook_resid_post", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out"))
    ids, mask = encode(model, TEXTS)
    want = hooked_logits(model, plan, 0.8, ids, mask)
    out = merge_plan(model, plan, 0.8, tmp_path / "llama3")
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(out)(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-4, rtol=0)
    tok, ref = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(family_dirs["llama3"])
    assert tok("a b")["input_ids"] == ref("a b")["input_ids"] and tok("a")["input_ids"][0] == tok.bos_token_id
    for kind, model_type in (("qwen2", "qwen2"), ("mistral", "mistral"), ("phi3", "phi3"), ("gemma2", "gemma2")):
        other = load_model(family_dirs[kind])
        with pytest.raises(ValueError, match=f"cannot fold a plan into a '{model_type}' model"):
            merge_plan(other, make_plan(other), 0.5, tmp_path / kind)
        assert not (tmp_path / kind).exists()


def test_why_resid_mid_is_refused(tiny_llama, one_thread):
    """The premise of the refusal: in TransformerBridge a vector added at hook_resid_mid (an alias of
    ln2.hook_in) reaches only the MLP; the residual carried to hook_resid_post does not contain it.
    At hook_attn_out it does, which is what an o_proj bias reproduces. If TransformerLens changes
    the alias, this test fails and resid_mid can be folded like attn_out."""
    ids, _ = encode(tiny_llama, TEXTS[:1])
    c = torch.randn(tiny_llama.cfg.d_model, generator=torch.Generator().manual_seed(1))
    names = ["blocks.2.hook_resid_post", "blocks.2.hook_mlp_out"]

    def carried(hook):  # what reached resid_post besides the MLP's own change (a raw hook: steer() refuses resid_mid)
        with torch.no_grad():
            _, base = tiny_llama.run_with_cache(ids, names_filter=names)
            with tiny_llama.hooks(fwd_hooks=[(hook, lambda x, hook=None: x + c)]):
                _, moved = tiny_llama.run_with_cache(ids, names_filter=names)
        return (moved[names[0]] - base[names[0]]) - (moved[names[1]] - base[names[1]])

    torch.testing.assert_close(carried("blocks.2.hook_attn_out")[0], c.expand(ids.shape[1], -1), atol=1e-5, rtol=0)
    assert carried("blocks.2.hook_resid_mid").abs().max() < 1e-5
