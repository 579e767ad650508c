"""Grouped-query attention: 8 query heads sharing 2 K/V heads, in both memory layouts.

Query head h reads K/V head h // (H // H_kv): heads 0-3 share K/V head 0, heads 4-7 K/V head 1.
fattn reads the shared heads in place; nothing is repeated in memory. The same call takes
head-major arrays (layout="bhld": [B, H, L, D]) or sequence-major ones (layout="blhd":
[B, L, H, D], as most models store them); the layout only changes strides, never the arithmetic.

Checks, and exits non-zero if any fails:
  * each layout against exact float64 attention (bound of docs/numerics.md section 4);
  * the two layouts give the same bits;
  * GQA gives the same bits as repeating each K/V head 4 times (plain multi-head attention).
Run: make examples   (or: .venv/bin/python examples/gqa.py)
"""
import sys

import ml_dtypes
import numpy as np

import fattn
from fattn import reference

from fattn.bounds import prefill_bound, within

rng = np.random.default_rng(4)
B, H, H_kv, L, D = 2, 8, 2, 300, 128
dtype = ml_dtypes.bfloat16
failures = []

# Sequence-major is how a model's projections usually come out: [B, L, H, D].
q_blhd = rng.standard_normal((B, L, H, D)).astype(dtype)
k_blhd = rng.standard_normal((B, L, H_kv, D)).astype(dtype)
v_blhd = rng.standard_normal((B, L, H_kv, D)).astype(dtype)
# The head-major copies: [B, H, L, D].
q, k, v = (np.ascontiguousarray(x.transpose(0, 2, 1, 3)) for x in (q_blhd, k_blhd, v_blhd))

out = fattn.flash_attn_prefill(q, k, v, causal=True)                             # [B, H, L, D]
out_blhd = fattn.flash_attn_prefill(q_blhd, k_blhd, v_blhd, causal=True, layout="blhd")  # [B, L, H, D]

exact = reference.attention(q, k, v, causal="top_left")
bound, _ = prefill_bound(q, k, v, causal=True)
for name, result in (("bhld", out), ("blhd", out_blhd.transpose(0, 2, 1, 3))):
    ok, err, allowed = within(result, exact, bound)
    ok = bool(ok.all())
    print(f"layout={name}: out {result.shape if name == 'bhld' else out_blhd.shape}, "
          f"max err vs float64 {err.max():.2e}, err/bound {(err / allowed).max():.3f}")
    if not ok:
        failures.append(f"layout={name} outside the bound")

same_layouts = np.array_equal(out.view(np.uint16), out_blhd.transpose(0, 2, 1, 3).view(np.uint16))
print(f"bhld and blhd outputs bit-identical: {same_layouts}")

# GQA is multi-head attention with each K/V head repeated H // H_kv times, only without the copies.
group = H // H_kv
out_mha = fattn.flash_attn_prefill(q, np.repeat(k, group, axis=1), np.repeat(v, group, axis=1), causal=True)
same_as_mha = np.array_equal(out.view(np.uint16), out_mha.view(np.uint16))
print(f"GQA (H={H}, H_kv={H_kv}) bit-identical to MHA with K/V repeated {group}x: {same_as_mha}")

if not same_layouts:
    failures.append("layouts differ")
if not same_as_mha:
    failures.append("GQA differs from repeated K/V")
if failures:
    print("FAILED:", "; ".join(failures))
    sys.exit(1)
