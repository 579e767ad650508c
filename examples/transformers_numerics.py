"""A transformers model on fattn: how far its hidden states are from the exact ones, layer by layer.

One Llama-shaped decoder (4 layers, grouped-query attention, random weights from its config:
nothing is downloaded), one batch of two prompts (the second padded at the end), run three ways:
with "eager" attention in float64 (the reference), and in bfloat16 (and float32) with
transformers' own "sdpa" attention and with attn_implementation="fattn"
(fattn.integrations.transformers). For every hidden state transformers returns
(output_hidden_states: the embeddings, then each layer's output, the last one after the final
norm) it prints the largest error against the float64 run over the tokens that are not padding,
and draws it to examples/out/transformers_numerics.png.

The bfloat16 errors are mostly the rest of the model's (the linear layers and norms round to
bfloat16 too), which is the point: swapping the attention for fattn's keeps the model within the
error it has anyway. Exits non-zero if fattn's error at a layer exceeds 1.5 times sdpa's.
Skips (exit 0, with a message) where torch or transformers is not installed;
`make examples` installs both.
Run: make examples   (or: .venv/bin/python examples/transformers_numerics.py)
"""
import copy
import os
import sys

try:
    import torch
    import transformers
except ImportError as e:
    print(f"skipped: this example needs torch and transformers ({e}); `make examples` installs them")
    sys.exit(0)

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import fattn.integrations.transformers

fattn.integrations.transformers.register()  # attn_implementation="fattn"

config = transformers.LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                  num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                                  max_position_embeddings=256, initializer_range=0.05)
torch.manual_seed(0)
reference_model = transformers.LlamaModel(config).to(torch.float64).eval()
ids = torch.randint(0, config.vocab_size, (2, 96))
attention_mask = torch.ones_like(ids)
attention_mask[1, -30:] = 0  # right padding: every token that is not padding sees at least itself
keep = attention_mask.bool()


def hidden_states(dtype, impl):
    model = copy.deepcopy(reference_model).to(dtype)
    model.set_attn_implementation(impl)
    assert model.config._attn_implementation == impl
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=attention_mask, output_hidden_states=True)
    return [h.to(torch.float64) for h in out.hidden_states]


exact = hidden_states(torch.float64, "eager")
runs = {(dtype, impl): hidden_states(dtype, impl)
        for dtype in (torch.bfloat16, torch.float32) for impl in ("sdpa", "fattn")}
errors = {key: [(h - r)[keep].abs().max().item() for h, r in zip(hs, exact)] for key, hs in runs.items()}
scale = [r[keep].abs().max().item() for r in exact]

names = ["embeddings"] + [f"layer {i}" for i in range(1, config.num_hidden_layers)] + \
        [f"layer {config.num_hidden_layers} + norm"]
print(f"transformers {transformers.__version__}, LlamaModel: {config.num_hidden_layers} layers, hidden "
      f"{config.hidden_size}, H={config.num_attention_heads} H_kv={config.num_key_value_heads} D={config.head_dim}; "
      f"batch 2 x {ids.shape[1]} tokens (30 padding)")
print("max |hidden state - float64 eager| over the tokens that are not padding\n")
print(f"{'hidden state':20s} {'max |exact|':>11s} {'sdpa bf16':>10s} {'fattn bf16':>10s} {'ratio':>6s}"
      f" {'sdpa f32':>10s} {'fattn f32':>10s}")
failures = []
for i, name in enumerate(names):
    s16, f16 = errors[(torch.bfloat16, "sdpa")][i], errors[(torch.bfloat16, "fattn")][i]
    s32, f32 = errors[(torch.float32, "sdpa")][i], errors[(torch.float32, "fattn")][i]
    print(f"{name:20s} {scale[i]:11.3g} {s16:10.3g} {f16:10.3g} {f16 / s16:6.2f} {s32:10.3g} {f32:10.3g}")
    if f16 > 1.5 * s16:
        failures.append(f"{name}: fattn bf16 error {f16:.3g} > 1.5 x sdpa's {s16:.3g}")

out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
os.makedirs(out_dir, exist_ok=True)
fig, ax = plt.subplots(figsize=(8, 4.5))
x = range(len(names))
for (dtype, impl), errs in errors.items():
    label = f"{impl} {str(dtype).replace('torch.', '')}"
    errs = [e if e > 0 else float("nan") for e in errs]  # an exact 0 (f32 embeddings) has no place on a log axis
    ax.plot(x, errs, marker="o" if impl == "sdpa" else "x", linestyle="-" if impl == "sdpa" else "--",
            label=label)
ax.set_yscale("log")
ax.set_xticks(list(x), names, rotation=20)
ax.set_ylabel("max |error| vs float64 eager")
ax.set_title("Llama (random weights): hidden-state error per layer, sdpa vs fattn attention")
ax.legend()
fig.tight_layout()
path = os.path.join(out_dir, "transformers_numerics.png")
fig.savefig(path, dpi=100)
print(f"\nfigure: {os.path.relpath(path)}")

if failures:
    print("FAILED:", "; ".join(failures))
    sys.exit(1)
print("fattn's error stays within 1.5x of transformers' own sdpa at every layer (bf16)")
