"""Cell sources of the notebooks (("md" | "code", source) lists); build.py turns them into .ipynb."""

SETUP = r'''
%matplotlib inline
import os, tempfile, time, warnings
warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
import torch
import matplotlib.pyplot as plt
from steer_lens.models import load_model

torch.set_num_threads(2)
plt.rcParams.update({"figure.dpi": 60, "figure.figsize": (6, 3)})
FAST = os.environ.get("STEER_LENS_FAST") == "1"  # tiny random models: a smoke test of the code paths
t0 = time.time()
if FAST:
    from steer_lens.testing import make_tiny_model
    tmp = tempfile.mkdtemp()
    target = load_model(make_tiny_model(f"{tmp}/target", "llama", d_model=64, n_layers=4))
    expert = load_model(make_tiny_model(f"{tmp}/expert", "gemma3", d_model=48, n_layers=3, seed=1))
else:
    target = load_model("smollm2-135m-instruct")  # d_model 576, 30 layers, chat template
    expert = load_model("gemma-3-270m")           # d_model 640, 18 layers, base model
for m in (target, expert):
    print(f"{m.cfg.model_name}: d_model={m.cfg.d_model}, n_layers={m.cfg.n_layers}")
print(f"loaded in {time.time() - t0:.0f}s")
'''

TASK_PLAN = r'''
from steer_lens.data import load_dataset, contrast_prompts
from steer_lens.pipeline import ExpertSteer
from steer_lens.probes import recording_directions

ds = load_dataset("sst2")
train = ds.split("train", limit=12 if FAST else 40)
test = ds.split("test", limit=8 if FAST else 40)
positives, negatives = contrast_prompts(train)      # (prompt, correct answer) vs (prompt, wrong answer)
t0 = time.time()
with recording_directions() as directions:          # keep each pair's RFM for the spectrum analysis
    plan = ExpertSteer(n_pairs=2 if FAST else 3, alignment="ridge",
                       target_window=None if FAST else (2, 27)).fit(expert, target, positives, negatives)
print(f"fitted in {time.time() - t0:.0f}s; pairs (expert layer, target layer, MI nats):")
for p in plan.pairs:
    print(f"  E{p.expert_layer} -> T{p.target_layer}  MI={p.mi:.3f}")
STRENGTH = 2.0 if FAST else 0.1  # x median residual norm; validation picks 0.025-0.2 in results/README.md
'''

QUICKSTART = [
    ("md", r'''
# 01 · Quickstart: steer SmolLM2 with directions learned from Gemma 3

ExpertSteer (Wang et al. 2025) steers a **target** model with vectors learned from an **expert** model's
activations: (1) align each expert layer into the target's width, (2) pick the expert/target layer pairs
with the *lowest* mutual information, (3) train a Recursive Feature Machine (RFM) on the aligned expert
activations of positive vs negative prompts, (4) the top eigenvector of its AGOP steers the paired target
layer. This notebook loads both models, captures activations, fits a plan and compares generations.

Set `STEER_LENS_FAST=1` to run it on tiny random models (seconds; text is gibberish).
'''),
    ("code", SETUP),
    ("md", r'''
## Capture activations
`capture` pools a hook's output per prompt: the `"last"` token, the `"mean"` over the answer span, or `"all"`
positions. The result is a typed `"n layer d_model"` tensor.
'''),
    ("code", r'''
from steer_lens.activations import capture

prompts = ["I loved this film, it was wonderful.", "What a dull, tedious waste of time."]
layers = [0, target.cfg.n_layers // 2, target.cfg.n_layers - 1]
acts = capture(target, prompts, layers=layers, position="last")
print(acts.tensor.shape, "(n, layer, d_model)")
print("mean residual norm per layer:", [f"{x:.1f}" for x in acts.tensor.norm(dim=-1).mean(0).tolist()])
'''),
    ("md", r'''
## Fit a steering plan for a concept: positive sentiment
Any two prompt sets work. Here positives are SST-2 sentences labelled positive and negatives those labelled
negative; activations are span-means over each sentence. `alignment="ridge"` is fast; the paper's
auto-encoder is `alignment="autoencoder"`.
'''),
    ("code", r'''
from steer_lens.data import load_dataset
from steer_lens.pipeline import ExpertSteer

def sentence(item):
    return item.question.split("\n")[0].removeprefix("Sentence: ")

train = load_dataset("sst2").split("train", limit=24 if FAST else 64)
pos = [sentence(it) for it in train if it.answer == 1]
neg = [sentence(it) for it in train if it.answer == 0]
t0 = time.time()
plan = ExpertSteer(n_pairs=2 if FAST else 3, alignment="ridge",
                   target_window=None if FAST else (2, 27)).fit(expert, target, pos, neg)
print(f"{len(pos)} positive / {len(neg)} negative sentences, fitted in {time.time() - t0:.0f}s")
for p in plan.pairs:
    hook = f"blocks.{p.target_layer}.hook_resid_post"
    print(f"expert layer {p.expert_layer:2d} -> target layer {p.target_layer:2d}  MI {p.mi:.3f} nats"
          f"  |resid| {plan.norms[hook]:.1f}")
'''),
    ("md", r'''
## Steer a generation, side by side
`plan.apply(model, strength)` is a context manager adding `strength × |resid| × v` at each plan hook
(relative scale: strength 1 adds a vector as long as a typical residual). Negative strengths steer away.
With three layers steered at once, strengths above ~0.3 make SmolLM2 degenerate (repeated tokens).
'''),
    ("code", r'''
from steer_lens.generate import generate

questions = ["Write one sentence about the movie you saw yesterday.", "How was your day?"]
strengths = [-0.15, 0.0, 0.15] if not FAST else [-2.0, 0.0, 2.0]  # 0.6 already breaks SmolLM2
for q in questions:
    print(f"### {q}")
    for s in strengths:
        with plan.apply(target, s):
            text = generate(target, [q], max_new_tokens=30)[0]
        print(f"  strength {s:+.2f}: {text.strip()!r}")
'''),
    ("md", r'''
## Does it help on a task? One honest comparison
`steer_lens.protocol.compare` is the project's evaluation discipline in one call: the strength is searched on
VALIDATION items only (0 = "do not steer" is always a candidate; a coarse grid, then refinement where the
answers flip; `signed=True` also tries negative strengths), TEST is scored once for the unsteered model, the
plan and a random-vector control at the same hooks, norms and strength, with paired bootstrap CIs and
McNemar tests. A sentiment direction is a *label* direction for SST-2 ("positive" vs "negative"), so the
useful sign is whichever moves SmolLM2 off its habit of answering one label.
'''),
    ("code", r'''
from steer_lens.protocol import StrengthSearch, compare, render_comparison

search = StrengthSearch(grid=(0.1, 0.3), refine_rounds=1, extend=(), signed=True)
res = compare(target, load_dataset("sst2"), plan, search=search, limit=8 if FAST else 40, val_limit=8 if FAST else 40)
print(render_comparison(res))
print("validation curve:", [(p["strength"], round(p["accuracy"], 2)) for p in res["val_curve"]])
'''),
    ("md", r'''
## Save and reload
A plan is a folder (`plan.json` + safetensors), written atomically and checked against the model on `apply`.
'''),
    ("code", r'''
from steer_lens.plan import SteeringPlan

folder = plan.save(tempfile.mkdtemp() + "/sentiment_plan")
again = SteeringPlan.load(folder)
print(sorted(p.name for p in folder.iterdir()), [h for h in again.vectors])
assert all(torch.equal(again.vectors[h], plan.vectors[h]) for h in plan.vectors)
'''),
]

MECHANISTIC = [
    ("md", r'''
# 02 · Mechanistic analysis of an ExpertSteer plan

We fit a plan on SST-2 *answer correctness* (prompt + correct label vs prompt + wrong label) and look inside:
which layer pairs MI selects, how concentrated each RFM's AGOP is, whether the steering vector is a good
linear read-out at every target layer, how it relates to CAA's mean difference, and what it says in token
space (logit lens). `STEER_LENS_FAST=1` runs it on tiny random models.
'''),
    ("code", SETUP),
    ("code", TASK_PLAN),
    ("md", "## 1. Mutual information between aligned expert layers and target layers (chosen pairs boxed)"),
    ("code", r'''
from steer_lens.mi import LayerPair, plot_mi

fig, ax = plt.subplots(figsize=(7, 3.2))
plot_mi(plan.mi, [LayerPair(p.expert_layer, p.target_layer, p.mi) for p in plan.pairs],
        expert_layers=plan.expert_layers, target_layers=plan.target_layers, ax=ax)
plt.show()
'''),
    ("md", r'''
## 2. AGOP spectra over RFM iterations
Top share = λ1/Σλ and effective rank = exp(entropy) of the normalised spectrum: a steering vector is
meaningful when one direction dominates.
'''),
    ("code", r'''
from steer_lens.probes import agop_history

fig, axes = plt.subplots(1, 2, figsize=(7, 2.6))
for pair, d in zip(plan.pairs, directions):
    hist = agop_history(d)
    label = f"E{pair.expert_layer}->T{pair.target_layer}"
    axes[0].plot([r["top_share"] for r in hist[:-1]], marker="o", label=label)
    axes[1].plot([r["effective_rank"] for r in hist[:-1]], marker="o", label=label)
    print(label, {k: round(v, 3) for k, v in hist[-1].items() if k in ("top_share", "effective_rank", "gap")})
axes[0].set(title="top share", xlabel="RFM predictor"); axes[1].set(title="effective rank", xlabel="RFM predictor")
axes[0].legend(fontsize=7); plt.tight_layout(); plt.show()
'''),
    ("md", r'''
## 3. Probe accuracy along the vector
Held-out test items: AUROC of the 1-D projection on each plan vector at **every** target layer, against a
cross-validated logistic probe (the best any linear read-out does there).
'''),
    ("code", r'''
from steer_lens.activations import capture
from steer_lens.probes import probe_along_vector

tpos, tneg = contrast_prompts(test)
all_layers = list(range(target.cfg.n_layers))
acts = capture(target, tpos + tneg, layers=all_layers, position="mean").tensor
P, N = acts[: len(tpos)], acts[len(tpos):]
fig, ax = plt.subplots(figsize=(6, 2.8))
for hook, vec in plan.vectors.items():
    pairs = torch.cat([torch.arange(len(tpos)), torch.arange(len(tneg))])  # an item's two answers share a fold
    rows = probe_along_vector(P, N, vec, all_layers, folds=3, groups=pairs)
    ax.plot(all_layers, [r["projection_auroc"] for r in rows], marker=".", label=f"vector of {hook.split('.')[1]}")
ax.plot(all_layers, [r["probe_auroc"] for r in rows], "k", lw=2, label="logistic probe")
ax.axhline(0.5, color="grey", lw=0.5); ax.set(xlabel="target layer", ylabel="AUROC"); ax.legend(fontsize=7)
plt.show()
'''),
    ("md", "## 4. How similar is the expert-derived vector to the target's own mean difference (CAA)?"),
    ("code", r'''
from steer_lens.probes import cosine_matrix

for hook, vec in plan.vectors.items():
    layer = int(hook.split(".")[1])
    a = capture(target, positives + negatives, layers=[layer], position="mean").tensor[:, 0]
    caa = a[: len(positives)].mean(0) - a[len(positives):].mean(0)
    rnd = torch.randn_like(vec)
    m = cosine_matrix({"expertsteer": vec, "caa": caa, "random": rnd})
    print(f"layer {layer}: cos(ES, CAA) = {m[0, 1]:+.3f}   cos(ES, random) = {m[0, 2]:+.3f}")
'''),
    ("md", r'''
## 5. Logit lens of the vectors, and the direct effect of steering
`logit_lens` applies the target's final RMSNorm (with its learned gamma) to the vector and unembeds it.
`direct_effect` compares next-token log-probs after test prompts with and without the plan.
'''),
    ("code", r'''
from steer_lens.probes import direct_effect, logit_lens

for hook, vec in plan.vectors.items():
    lens = logit_lens(target, vec, k=8)
    print(hook, "\n  top:   ", [t for t, _ in lens.top], "\n  bottom:", [t for t, _ in lens.bottom])
eff = direct_effect(target, [it.prompt() for it in test[:12]], plan=plan, strength=STRENGTH, k=8)
print(f"\nstrength {STRENGTH}: mean KL(steered||clean) = {eff.kl.mean():.4f} nats")
print("promoted:  ", [(t, round(s, 3)) for t, s in eff.top])
print("suppressed:", [(t, round(s, 3)) for t, s in eff.bottom])
'''),
]

ATTRIBUTION = [
    ("md", r'''
# 03 · Feature attribution: where the concept lives and which layers carry the effect

Same plan as notebook 02 (SST-2 answer correctness). We (1) project every token's residual on the steering
vector at every layer, (2) attribute the change in the correct answer's log-prob to the steering
perturbation's positions and components with gradient × activation, checking it against the actual change,
(3) ablate the plan's layer pairs one at a time and (4) split the answer margin into every head's and MLP's
direct contribution, clean and steered.
'''),
    ("code", SETUP),
    ("code", TASK_PLAN),
    ("md", "## 1. Per-token projection on the lowest-MI pair's vector, at every target layer"),
    ("code", r'''
from steer_lens.probes import token_projections

hook = f"blocks.{plan.pairs[0].target_layer}.hook_resid_post"
tpos, tneg = contrast_prompts(test)
fig, axes = plt.subplots(2, 1, figsize=(8, 4.6))
for ax, prompt, kind in zip(axes, (tpos[0], tneg[0]), ("correct", "wrong")):
    tp = token_projections(target, prompt, plan.vectors[hook])
    last = slice(-24, None)
    lim = float(tp.values[:, last].abs().max())
    ax.imshow(tp.values[:, last], aspect="auto", origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(tp.tokens[last])), [repr(t)[1:-1][:7] for t in tp.tokens[last]], rotation=90, fontsize=6)
    ax.set_ylabel("layer"); ax.set_title(f"{kind} answer {prompt[1]!r}", fontsize=8)
plt.tight_layout(); plt.show()
'''),
    ("md", r'''
## 2. Gradient × activation attribution of the answer's log-prob
For the perturbation δ = strength·|resid|·v added at each steered position, `grad · δ` summed over everything
is the first-order change d/dα log p(answer | αδ) at α = 1; we compare it with the actual change.
'''),
    ("code", r'''
from steer_lens.probes import steering_attribution

att = steering_attribution(target, tpos[:8], plan=plan, strength=STRENGTH)
actual = att.logprob_steered - att.logprob_clean
for i in range(min(4, len(actual))):
    print(f"item {i}: first-order {att.total[i]:+.4f}  actual {actual[i]:+.4f} nats")
per_layer = {h.split(".")[1]: float(c.sum()) for h, c in att.per_component.items()}
print("attribution per target layer (summed over items):", {k: round(v, 4) for k, v in per_layer.items()})
n0 = len(att.tokens[0])
pp = sum(p[0, :n0] for p in att.per_position.values())[-24:]
fig, ax = plt.subplots(figsize=(8, 2.4))
ax.bar(range(len(pp)), pp)
ax.set_xticks(range(len(pp)), [repr(t)[1:-1][:7] for t in att.tokens[0][-24:]], rotation=90, fontsize=6)
ax.set_ylabel("grad × δ"); plt.tight_layout(); plt.show()
'''),
    ("md", r'''
## 3. Layer ablation
Steer with the full plan, each pair alone ("only") and each pair removed ("without"); the metric is the mean
margin (correct minus best wrong choice, mean per-token log-prob, nats) on the test items.
'''),
    ("code", r'''
from steer_lens.probes import layer_ablation, margin_metric

rows = layer_ablation(target, plan, margin_metric(test[:20]), strength=STRENGTH)
for r in rows:
    name = r["condition"].replace("blocks.", "L").replace(".hook_resid_post", "")
    print(f"{name:14s} margin {r['metric']:+.4f}   vs unsteered {r['vs_unsteered']:+.4f}")
'''),
    ("md", r'''
## 4. Which heads and MLPs carry the effect: direct logit attribution of the answer margin
The margin "positive" minus "negative" where the answer token is predicted splits exactly into the embeddings,
every attention head and MLP output, the added vectors themselves and the final norm's rescaling
(`margin_components`; the terms of each item sum to its margin, checked against the model's logits). Steered
minus clean per term says where the steering effect enters the readout. (The tiny models' byte tokenizer spells
"positive" in several tokens, so the smoke test uses one-letter answers.)
'''),
    ("code", r'''
from steer_lens.data import Item
from steer_lens.probes import margin_components

items = test[:20] if not FAST else [Item(f"t{i}", f"is {i} x or y", ("x", "y"), i % 2) for i in range(6)]
att = margin_components(target, items, plan=plan, strength=STRENGTH, heads=True)
print(f"mean margin: clean {float(att.margin_clean.mean()):+.3f}, steered {float(att.margin_steered.mean()):+.3f}")
for r in att.table()[:8]:
    print(f"{r['term']:26s} clean {r['clean']:+.3f}  steered {r['steered']:+.3f}  change {r['delta']:+.3f}")
d = att.delta.mean(0)
layers = range(target.cfg.n_layers)
attn = [float(sum(d[k] for k, t in enumerate(att.terms) if t.startswith(f"blocks.{l}.attn"))) for l in layers]
mlp = [float(d[att.terms.index(f"blocks.{l}.mlp")]) for l in layers]
fig, ax = plt.subplots(figsize=(8, 2.4))
ax.bar([l - 0.2 for l in layers], attn, width=0.4, label="attention (all heads)")
ax.bar([l + 0.2 for l in layers], mlp, width=0.4, label="MLP")
ax.set_xlabel("target layer"); ax.set_ylabel("margin change (logits)"); ax.legend(fontsize=7)
plt.tight_layout(); plt.show()
'''),
]

NOTEBOOKS = {"01_quickstart": QUICKSTART, "02_mechanistic_analysis": MECHANISTIC,
             "03_feature_attribution": ATTRIBUTION}
