"""Packed variable-length prefill: a batch of prompts of different lengths in one call.

Serving code packs the prompts of a batch along the rows instead of padding them to one length
(flash-attention's varlen layout): q [total_q, H, D], k and v [total_k, H_kv, D], and offsets
cu_seqlens = [0, L0, L0 + L1, ...] saying where each sequence starts. Here 12 prompts, one of
them empty, one of length 1, and one continuing a cached prefix (more keys than queries: causal
is bottom-right per sequence, so its queries sit after the prefix).

Checks, and exits non-zero if any fails:
  * each sequence's rows equal flash_attn_prefill on that sequence alone, bit for bit;
  * each sequence against exact float64 attention (bound of docs/numerics.md section 4).
Also prints the time of the one call and of the per-sequence loop (no check on time).
Run: make examples   (or: .venv/bin/python examples/varlen.py)
"""
import sys
import time

import ml_dtypes
import numpy as np

import fattn
from fattn import reference
from fattn.bounds import prefill_bound, within

rng = np.random.default_rng(21)
H, H_kv, D = 8, 2, 128
dtype = ml_dtypes.bfloat16
lengths_q = [int(n) for n in rng.integers(2, 300, size=12)]
lengths_q[3], lengths_q[7] = 0, 1
lengths_k = list(lengths_q)
lengths_k[5] += 200  # a prompt continuing 200 cached tokens: its keys are the prefix and itself
cu_q = np.concatenate([[0], np.cumsum(lengths_q)]).astype(np.int32)
cu_k = np.concatenate([[0], np.cumsum(lengths_k)]).astype(np.int32)
q = rng.standard_normal((cu_q[-1], H, D)).astype(dtype)
k = rng.standard_normal((cu_k[-1], H_kv, D)).astype(dtype)
v = rng.standard_normal((cu_k[-1], H_kv, D)).astype(dtype)
failures = []

out, lse = fattn.flash_attn_varlen(q, k, v, cu_q, cu_k, causal=True, return_lse=True)
print(f"{len(lengths_q)} sequences, total_q {cu_q[-1]}, total_k {cu_k[-1]}: out {out.shape}, lse {lse.shape}")

worst = 0.0
for b in range(len(lengths_q)):
    a, e, ka, ke = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
    if e == a:
        continue  # an empty sequence: no rows
    args = (q[None, a:e], k[None, ka:ke], v[None, ka:ke])
    alone = fattn.flash_attn_prefill(*args, layout="blhd", causal="bottom_right")
    if not np.array_equal(alone[0].view(np.uint16), out[a:e].view(np.uint16)):
        failures.append(f"sequence {b} differs from its own call")
    exact = reference.attention(*args, layout="blhd", causal="bottom_right")
    bound, _ = prefill_bound(*args, layout="blhd", causal="bottom_right")
    ok, err, allowed = within(out[None, a:e], exact, bound)
    worst = max(worst, float((err / allowed).max()))
    if not ok.all():
        failures.append(f"sequence {b} outside the bound")
print(f"every sequence bit-identical to its own flash_attn_prefill call: {not failures}; "
      f"worst err/bound vs float64 {worst:.3f}")


def best_of(fn, n=5):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


one_call = best_of(lambda: fattn.flash_attn_varlen(q, k, v, cu_q, cu_k, causal=True))
loop = best_of(lambda: [fattn.flash_attn_prefill(q[None, a:e], k[None, ka:ke], v[None, ka:ke], layout="blhd",
                                                 causal="bottom_right")
                        for a, e, ka, ke in zip(cu_q[:-1], cu_q[1:], cu_k[:-1], cu_k[1:]) if e > a])
print(f"one varlen call {one_call * 1e3:.1f} ms, per-sequence loop {loop * 1e3:.1f} ms "
      f"({fattn.get_num_threads()} threads; best of 5)")

if failures:
    print("FAILED:", "; ".join(failures))
    sys.exit(1)
