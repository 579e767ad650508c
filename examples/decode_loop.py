"""Token-by-token decode over a growing KV cache, checked at every step.

The cache is allocated once with spare capacity ([H_kv, capacity, D]); each step appends the
new token's K and V row at position kv_seq_len - 1 and calls flash_attn_vec with the new
length. Only positions < kv_seq_len are read, so the unused capacity may hold anything: here
it holds NaN, and no output ever becomes NaN.

Each step is checked against exact float64 attention over the valid prefix, with the bound of
docs/numerics.md section 5 (dominated by Q's rounding to float16) and the issue's
"~1e-3 of max|output|". Exits non-zero at the first step that misses either.
Run: make examples   (or: .venv/bin/python examples/decode_loop.py)
"""
import sys
import time

import numpy as np

import fattn
from fattn import reference

from fattn.bounds import decode_bound, within

rng = np.random.default_rng(2)
H, H_kv, D, capacity = 8, 2, 128, 512
prompt, steps = 60, 100  # crosses several 32-position chunk boundaries

k_cache = np.full((H_kv, capacity, D), np.nan, dtype=np.float16)
v_cache = np.full((H_kv, capacity, D), np.nan, dtype=np.float16)
k_cache[:, :prompt] = rng.standard_normal((H_kv, prompt, D))  # the prompt's K/V (from a prefill)
v_cache[:, :prompt] = rng.standard_normal((H_kv, prompt, D))

worst_bound = worst_rel = 0.0
kernel_times = []
for step in range(steps):
    kv_seq_len = prompt + step + 1
    q = rng.standard_normal((H, D)).astype(np.float32)           # this token's query, one per head
    k_cache[:, kv_seq_len - 1] = rng.standard_normal((H_kv, D))  # ... and its K/V rows, appended
    v_cache[:, kv_seq_len - 1] = rng.standard_normal((H_kv, D))

    t0 = time.perf_counter()
    out = fattn.flash_attn_vec(q, k_cache, v_cache, kv_seq_len=kv_seq_len)  # [H, D] float32
    kernel_times.append(time.perf_counter() - t0)

    valid_k, valid_v = k_cache[None, :, :kv_seq_len], v_cache[None, :, :kv_seq_len]
    exact = reference.attention(q[None, :, None], valid_k, valid_v)[0, :, 0]  # [H, D] float64
    ok, err, allowed = within(out, exact, decode_bound(q, k_cache, v_cache, kv_seq_len=kv_seq_len))
    ok = bool(ok.all())
    rel = err.max() / np.abs(exact).max()
    worst_bound, worst_rel = max(worst_bound, (err / allowed).max()), max(worst_rel, rel)
    if step % 20 == 0 or step == steps - 1:
        print(f"step {step:3d}  kv_seq_len {kv_seq_len:3d}  max err {err.max():.2e}  "
              f"err/bound {(err / allowed).max():.3f}  err/max|out| {rel:.1e}")
    if not ok or rel > 1e-3 or not np.isfinite(out).all():
        print(f"FAILED at step {step} (kv_seq_len {kv_seq_len}): outside the bound, above 1e-3, or not finite")
        sys.exit(1)

print(f"{steps} steps, kv_seq_len {prompt + 1} -> {prompt + steps} of capacity {capacity} (the rest NaN): "
      f"worst err/bound {worst_bound:.3f}, worst err/max|out| {worst_rel:.1e}, "
      f"fattn {np.median(kernel_times) * 1e6:.0f} us per step (median)")
