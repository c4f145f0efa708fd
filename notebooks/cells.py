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

plt.rcParams.update({"figure.dpi": 60, "figure.figsize": (6, 3)})
FAST = os.environ.get("STEER_LENS_FAST") == "1"  # tiny random models: a smoke test of the code paths
SMALL = not FAST and os.environ.get("STEER_LENS_SMALL") == "1"  # real models, few items: the tests' check that every cell runs
torch.set_num_threads(1 if FAST or SMALL else 2)  # the tests' runs: tiny problems, beside other jobs
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
train = ds.split("train", limit=12 if FAST else 8 if SMALL else 40)
test = ds.split("test", limit=8 if FAST or SMALL else 40)
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
# 01 · Quickstart: the recipe that works on SST-2, and how to tell that it works

ExpertSteer (Wang et al. 2025) steers a **target** model (SmolLM2-135M-Instruct) with directions learned from
an **expert** model (Gemma-3-270M): align each expert layer into the target's width, pick expert/target layer
pairs, fit a Recursive Feature Machine on the expert's activations of positive vs negative prompts, and add the
top direction of its AGOP to the paired target layer. Every variant is a named recipe in `steer_lens.methods`.

This notebook runs the one that works on SST-2, `expertsteer_label` (the expert's *label* direction: "positive"
minus "negative" answers), the way the benchmark does: fit on TRAIN, choose the strength on VALIDATION, look at
its **dose-response** (a label direction must flip answers as the signed strength grows: the positive control),
generate with it, and only then score TEST once beside its **random control** (random vectors at the same
hook, norm and strength) and **calibration** (no steering: a bias on the answer margins). The paper's own
specification, `expertsteer_autoencoder`, is in the registry too; `steer-lens demo` runs it beside this recipe.

Set `STEER_LENS_FAST=1` to run it on tiny random models (seconds; text and numbers are meaningless), or
`STEER_LENS_SMALL=1` to run it on the real models with a few items (the test suite's check; numbers not meaningful).
'''),
    ("code", SETUP),
    ("md", r'''
## The registry of recipes
Each recipe is a documented object: what it fits, whether it reads the expert, and its matched random control.
A `RuleSet` fixes every setting that decides what a row selects and scores (item counts, strength grid, search);
here a small one, so the notebook runs in a few minutes on a laptop CPU.
'''),
    ("code", r'''
import steer_lens as sl
from steer_lens.methods import RuleSet, fit_method

print(", ".join(sl.methods.available()))
recipe = sl.methods.get("expertsteer_label")
print(f"\n{recipe.name}: {recipe.doc}\nrandom control: {recipe.control}; reads the expert: {recipe.needs_expert}")
RULES = (RuleSet.fast(limit_train=16, pair_shortlist=1) if FAST else
         RuleSet(limit_train=8, limit_val=6, limit_test=8, grid=(0.1, 0.2), refine_rounds=1, pair_shortlist=1) if SMALL else
         RuleSet(limit_train=32, limit_val=24, limit_test=100, refine_rounds=1, pair_shortlist=1))
print(f"\n{RULES.limit_train} train / {RULES.limit_val} validation / {RULES.limit_test} test items, "
      f"strength grid {RULES.grid} (signed for a label direction), rule set {RULES.hash}")
'''),
    ("md", r'''
## Fit on TRAIN, choose on VALIDATION
`fit_method` fits the recipe on the train split (ridge alignment of the expert's layers, a pair shortlisted on
train, an RFM on "choice 1 minus choice 0") and searches the signed strength on validation items; strength 0
("do not steer") is always a candidate. TEST is not read. It runs in the benchmark runner's context for SST-2
(`Bench.context`), so the test scoring below reuses this fit and this choice instead of searching again.
'''),
    ("code", r'''
from steer_lens.bench import Bench
from steer_lens.protocol import rank

bench = Bench(target, expert, cache=tempfile.mkdtemp(), rules=RULES)  # rows cached in a scratch folder
t0 = time.time()
plan, choice = fit_method("expertsteer_label", target, "sst2", expert=expert, rules=RULES,
                          context=bench.context("sst2"))
pair = plan.pairs[0]
print(f"fitted and chosen in {time.time() - t0:.0f}s: expert layer {pair.expert_layer} -> target layer "
      f"{pair.target_layer}, strength {choice['strength']:g} (x the median residual norm there)")
if choice["strength"] == 0:
    print("validation chose strength 0: no steering chosen")
curve = sorted(choice["val_curve"], key=lambda p: p["strength"])
print("validation accuracy by strength:", ", ".join(f"{p['strength']:+g}: {p['accuracy']:.2f}" for p in curve))
'''),
    ("md", r'''
## The positive control: dose-response
Along a label direction the share of "positive" answers must rise with the signed strength (negative strengths
push towards "negative"); along a random direction at the same hook and norm it should not. `sweep` scores
several strengths at once (the blocks below the steered layer run once). Validation items only.
'''),
    ("code", r'''
from steer_lens.baselines import random_plan
from steer_lens.protocol import point
from steer_lens.sweep import sweep

val = sl.load_dataset("sst2").split("validation", limit=RULES.limit_val)
strengths = [-2.0, -1.0, 0.0, 1.0, 2.0] if FAST else [-0.4, -0.2, 0.0, 0.1, 0.2, 0.3, 0.4]
control = random_plan(plan, seed=0)  # the random control: random unit vector, same hook, norm and strengths
curves = {name: [point(s, r) for s, r in zip(strengths, sweep(target, val, p, strengths))]
          for name, p in (("label direction", plan), ("random control", control))}
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for name, pts in curves.items():
    share = [(p["shares"] + [0, 0])[1] for p in pts]
    axes[0].plot(strengths, share, "o-", label=name)
    axes[1].plot(strengths, [p["accuracy"] for p in pts], "o-", label=name)
    print(f"{name:16s} share of 'positive':", " ".join(f"{x:.2f}" for x in share))
for ax, label in zip(axes, ("share of 'positive' answers", "validation accuracy")):
    if choice["strength"]:
        ax.axvline(choice["strength"], color="grey", ls=":", lw=1)
    ax.set(xlabel="signed strength (x median residual norm)", ylabel=label, ylim=(-0.03, 1.03))
axes[0].legend(fontsize=7); plt.tight_layout(); plt.show()
'''),
    ("md", r'''
## Steer a generation, side by side
`plan.apply(model, strength)` adds `strength × |resid| × v` at the plan's hook while the block runs. If
validation chose 0 there is nothing to show at the chosen strength: we say so and show the best nonzero
strength of the validation curve instead, labelled as not chosen.
'''),
    ("code", r'''
from steer_lens.generate import generate

s = choice["strength"]
label = f"strength {s:g} (chosen on validation)"
if s == 0:
    s = max((p for p in choice["val_curve"] if p["strength"] != 0), key=rank)["strength"]
    label = f"best nonzero strength {s:g} (not chosen)"
    print("validation chose strength 0: no steering chosen")
q = "Write one sentence about a movie you just watched."
print(f"unsteered: {generate(target, [q], max_new_tokens=30)[0].strip()!r}")
with plan.apply(target, s):
    print(f"{label}: {generate(target, [q], max_new_tokens=30)[0].strip()!r}")
'''),
    ("md", r'''
## Score TEST once, beside the random control and calibration
`compare_method` runs the recipe through the benchmark runner (`Bench`: the fit and validation choice made
above, rows cached), its random control at the chosen hook, norm and strength, the unsteered target
and calibration, each on the same test items, with paired bootstrap CIs and McNemar tests. A gain that the
random control or calibration also gets is not evidence for the direction.
'''),
    ("code", r'''
from steer_lens.bench import compare_method, render_compare

t0 = time.time()
res = compare_method(bench, "sst2", "expertsteer_label")
print(render_compare(res), f"\n({time.time() - t0:.0f}s)")
assert res["rows"]["expertsteer_label"]["strength"] == choice["strength"]  # the same choice as fit_method's
rows = res["rows"]
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.bar(list(rows), [r["accuracy"] for r in rows.values()],
       yerr=[[r["accuracy"] - r["ci_low"] for r in rows.values()], [r["ci_high"] - r["accuracy"] for r in rows.values()]],
       capsize=4, color=["#2a7", "#c55", "#888", "#58b"][: len(rows)])
ax.set(ylabel=f"test accuracy (n={rows['unsteered']['n']})", ylim=(0, 1)); plt.tight_layout(); plt.show()
'''),
    ("md", r'''
## Save and reload
A plan is a folder (`plan.json` + safetensors), written atomically and checked against the model on `apply`;
`steer-lens fit --method expertsteer_label` writes the same plan with its validation choice (`choice.json`).
'''),
    ("code", r'''
from steer_lens.plan import SteeringPlan

folder = plan.save(tempfile.mkdtemp() + "/sst2_label_plan")
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
