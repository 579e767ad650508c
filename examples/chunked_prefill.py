"""A long prompt prefilled in chunks into a ring-buffer KV cache, with learned sinks and a sliding
window, then decoded token by token; every output held against the float64 reference.

Run: .venv/bin/python examples/chunked_prefill.py   (make examples runs every example)
Exits non-zero if an output lies outside the bound docs/numerics.md derives for it.

The model: H query heads over H_kv K/V heads (GQA), a window of W positions (a query sees the
last W positions, its own included), one learned sink logit per head (gpt-oss style). The cache
is a ring of C >= W slots: absolute position p lives in slot p % C, so it always holds the last C
positions. Each prefill chunk attends to the keys its window reaches: the ring's last W - 1
positions (unrolled) followed by the chunk's own, with q_offset saying where the chunk's first
query sits among them. Each decode step writes its K/V into the ring, then reads the ring in
place with ring_start (the slot of the oldest position it holds).
"""
import sys

import ml_dtypes
import numpy as np

import fattn
from fattn import reference
from fattn.bounds import decode_bound, prefill_bound, within

rng = np.random.default_rng(19)
H, H_kv, D = 8, 2, 64
W, C = 48, 64                 # the window, the ring's capacity (C >= W)
PROMPT, CHUNK, DECODE = 200, 56, 12
dtype = ml_dtypes.bfloat16    # the prefill's I/O type (the cache holds it too)

total = PROMPT + DECODE
q_all = rng.standard_normal((1, H, total, D)).astype(dtype)
k_all = rng.standard_normal((1, H_kv, total, D)).astype(dtype)
v_all = rng.standard_normal((1, H_kv, total, D)).astype(dtype)
sinks = rng.normal(0.0, 1.5, H).astype(np.float32)

ring_k = np.zeros((1, H_kv, C, D), dtype=dtype)
ring_v = np.zeros((1, H_kv, C, D), dtype=dtype)


def unrolled(first, end):
    """Positions first..end-1 from the ring (each must still be there)."""
    slots = np.arange(first, end) % C
    return ring_k[:, :, slots], ring_v[:, :, slots]


failed = False
print(f"prompt {PROMPT} tokens in chunks of {CHUNK}, window {W}, ring of {C} slots, H={H} H_kv={H_kv} D={D}, "
      f"{np.dtype(dtype).name}, sinks {[round(float(x), 2) for x in sinks]}")
for start in range(0, PROMPT, CHUNK):
    end = min(PROMPT, start + CHUNK)
    first = max(0, start - (W - 1))              # the oldest key the chunk's first query sees
    old_k, old_v = unrolled(first, start)
    k = np.concatenate([old_k, k_all[:, :, start:end]], axis=2)
    v = np.concatenate([old_v, v_all[:, :, start:end]], axis=2)
    q = q_all[:, :, start:end]
    out = fattn.flash_attn_prefill(q, k, v, window=W, sinks=sinks, q_offset=start - first)
    ring_k[:, :, np.arange(start, end) % C] = k_all[:, :, start:end]   # then the chunk joins the ring
    ring_v[:, :, np.arange(start, end) % C] = v_all[:, :, start:end]

    # Against float64 attention over the whole prompt so far (keys 0..end-1), rows start..end-1.
    exact = reference.attention(q, k_all[:, :, :end], v_all[:, :, :end], causal="top_left", window=W,
                                sinks=sinks, q_offset=start)
    bound, _ = prefill_bound(q, k, v, window=W, sinks=sinks, q_offset=start - first)
    ok, err, allowed = within(out, exact, bound)
    failed |= not ok.all()
    print(f"  prefill rows {start:3d}..{end - 1:3d} (keys {first}..{end - 1}, q_offset {start - first:2d}): "
          f"max error {err.max():.2e}, allowed {allowed.min():.2e}  {'OK' if ok.all() else 'FAILED'}")

# One chunk would have given the same bits: the whole prompt at once, against every key.
whole = fattn.flash_attn_prefill(q_all[:, :, :PROMPT], k_all[:, :, :PROMPT], v_all[:, :, :PROMPT], window=W,
                                 sinks=sinks)
last = fattn.flash_attn_prefill(q_all[:, :, PROMPT - 8:PROMPT], k_all[:, :, :PROMPT], v_all[:, :, :PROMPT],
                                window=W, sinks=sinks, q_offset=PROMPT - 8)
same = np.array_equal(whole[:, :, PROMPT - 8:].view(np.uint16), last.view(np.uint16))
failed |= not same
print(f"  the last 8 rows as a chunk at q_offset={PROMPT - 8} equal the one-shot call's bits: {same}")

for step in range(DECODE):
    pos = PROMPT + step                          # the new token's position
    ring_k[:, :, pos % C] = k_all[:, :, pos]
    ring_v[:, :, pos % C] = v_all[:, :, pos]
    held = min(pos + 1, C)                       # positions pos-held+1..pos are in the ring
    ring_start = (pos + 1 - held) % C            # the slot of the oldest one
    q = q_all[:, :, pos].astype(np.float32)      # the decode takes an f32 query [B, H, D]
    out = fattn.flash_attn_vec(q, ring_k, ring_v, kv_seq_len=held, ring_start=ring_start, mask="sliding_window",
                               window=W, sinks=sinks)
    # The same step on an unrolled cache gives the same bits.
    flat_k, flat_v = unrolled(pos + 1 - held, pos + 1)
    flat = fattn.flash_attn_vec(q, flat_k, flat_v, kv_seq_len=held, mask="sliding_window", window=W, sinks=sinks)
    exact = reference.attention(q[:, :, None], k_all[:, :, :pos + 1], v_all[:, :, :pos + 1], causal="top_left",
                                window=W, sinks=sinks, q_offset=pos)[:, :, 0]
    bound = decode_bound(q, flat_k, flat_v, kv_seq_len=held, window=W, sinks=sinks)
    ok, err, allowed = within(out, exact, bound)
    bits = np.array_equal(out, flat)
    failed |= not (ok.all() and bits)
    print(f"  decode position {pos} (ring_start {ring_start:2d}): max error {err.max():.2e}, allowed "
          f"{allowed.min():.2e}, ring = unrolled to the bit: {bits}  {'OK' if ok.all() and bits else 'FAILED'}")

print("FAILED" if failed else "all within the bounds")
sys.exit(1 if failed else 0)
