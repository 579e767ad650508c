"""A serving batch: prompts of different lengths prefilled in one packed call into a paged KV cache,
then decoded step by step, every step checked against float64 attention.

Run: .venv/bin/python examples/serving_batch.py   (make examples runs every example)
What it shows (and exits non-zero if any of it fails):
  * fattn.flash_attn_varlen over the packed prompts (causal, bottom-right per sequence) is within
    fattn.bounds.prefill_bound of float64 attention, sequence by sequence;
  * the prompts' K/V go into a float16 block pool [num_blocks, block_size, H_kv, D] through a
    block table (blocks handed out from a shuffled free list, as a server's allocator would);
  * each decode step appends one token per live sequence (a new block when one fills up; one
    sequence stops early) and calls fattn.flash_attn_vec(..., block_table=...) once for the batch;
    every sequence's output equals flash_attn_vec on its gathered contiguous cache bit for bit and
    is within fattn.bounds.decode_bound of float64 attention over the cache's values.
Queries, keys and values are random stand-ins for a model's projections (no model is downloaded).
"""
import sys

import numpy as np

import fattn
from fattn import reference
from fattn.bounds import decode_bound, prefill_bound, within

rng = np.random.default_rng(7)
H, H_KV, D, BLOCK = 8, 2, 64, 16
prompts = [37, 120, 5, 64]                      # prompt lengths
new_tokens = [6, 6, 2, 6]                       # sequence 2 stops after 2 tokens
B = len(prompts)
capacity_blocks = sum(-(-(p + n) // BLOCK) for p, n in zip(prompts, new_tokens)) + 4
free = list(rng.permutation(capacity_blocks))   # the allocator's free list, in no particular order
pool_k = np.zeros((capacity_blocks, BLOCK, H_KV, D), np.float16)
pool_v = np.zeros_like(pool_k)
table = np.full((B, capacity_blocks), -1, np.int32)  # -1: never read past a sequence's blocks
lengths = np.zeros(B, np.int64)
history = [[] for _ in range(B)]               # each sequence's K/V rows (float16), for the checks

failed = False


def check(name, ok):
    global failed
    failed |= not ok
    return "ok" if ok else "FAILED"


def append(b, k_row, v_row):
    """Writes one token's K/V [H_kv, D] for sequence b at its next position (a new block if needed)."""
    pos = int(lengths[b])
    if pos % BLOCK == 0:
        table[b, pos // BLOCK] = free.pop()
    blk = table[b, pos // BLOCK]
    pool_k[blk, pos % BLOCK] = k_row
    pool_v[blk, pos % BLOCK] = v_row
    history[b].append((k_row, v_row))
    lengths[b] = pos + 1


# --- prefill: one packed call -------------------------------------------------------------------
cu = np.concatenate([[0], np.cumsum(prompts)]).astype(np.int32)
total = int(cu[-1])
q = rng.standard_normal((total, H, D)).astype(np.float16)
k = rng.standard_normal((total, H_KV, D)).astype(np.float16)
v = rng.standard_normal((total, H_KV, D)).astype(np.float16)
out, lse = fattn.flash_attn_varlen(q, k, v, cu, cu, causal=True, return_lse=True)
print(f"prefill: {B} prompts of {prompts} tokens packed into [{total}, {H}, {D}] (float16), one call")
for b in range(B):
    a, e = cu[b], cu[b + 1]
    qs, ks, vs = (x[a:e][None] for x in (q, k, v))          # [1, L, H, D]: layout "blhd"
    exact = reference.attention(qs, ks, vs, causal="bottom_right", layout="blhd")
    bound, _ = prefill_bound(qs, ks, vs, causal=True, layout="blhd")
    ok, err, _ = within(out[a:e][None], exact, bound)
    print(f"  sequence {b}: {e - a:4d} tokens, max |err| {err.max():.2e} vs float64: {check('prefill', ok.all())}")
    for t in range(a, e):
        append(b, k[t], v[t])

# --- decode: one batched paged call per step ----------------------------------------------------
print(f"decode: block size {BLOCK}, pool of {capacity_blocks} blocks, a block table [B, max_blocks]")
for step in range(max(new_tokens)):
    live = np.array([step < n for n in new_tokens])
    for b in np.flatnonzero(live):
        append(b, rng.standard_normal((H_KV, D)).astype(np.float16), rng.standard_normal((H_KV, D)).astype(np.float16))
    qd = rng.standard_normal((B, H, D)).astype(np.float32)
    seen = np.where(live, lengths, 0)                       # finished sequences: length 0, output 0
    od = fattn.flash_attn_vec(qd, pool_k, pool_v, kv_seq_len=seen, block_table=table)
    worst, same = 0.0, True
    for b in np.flatnonzero(live):
        kc = np.stack([r[0] for r in history[b]], axis=1)  # [H_kv, L, D], gathered
        vc = np.stack([r[1] for r in history[b]], axis=1)
        same &= np.array_equal(od[b], fattn.flash_attn_vec(qd[b], kc, vc, kv_seq_len=kc.shape[1]))
        exact = reference.attention(qd[b][None, :, None], kc[None], vc[None], causal="bottom_right")[0, :, 0]
        ok, err, allowed = within(od[b], exact, decode_bound(qd[b], kc, vc, kv_seq_len=kc.shape[1]))
        failed |= not ok.all()
        worst = max(worst, float((err / allowed).max()))
    failed |= not same or bool(od[~live].any())
    print(f"  step {step}: lengths {seen.tolist()}, paged = gathered to the bit: {check('bits', same)}, "
          f"worst error {worst:.3f} of its bound")
print("FAILED" if failed else "all checks hold")
sys.exit(1 if failed else 0)
