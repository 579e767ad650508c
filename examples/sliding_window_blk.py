"""Sliding-window attention with a tile-skip map: same bits, less work.

flash_attn_prefill works on tiles of BQ query rows x BK keys. With a sliding-window mask most
tiles are entirely blocked; flash_attn_prefill_blk classifies every tile of a mask once
(0 = skip the tile, 2 = skip only the mask add because it adds exact zeros, 1 = full work), and
passing that map as blk= lets the kernel skip them. fattn builds the map from the mask values
as the kernel sees them, so it never changes a bit of the output.

Shows the fraction of tiles skipped, checks bit-identity with and without blk and the result
against exact float64 attention (bound of docs/numerics.md section 4), and times both.
Exits non-zero if the outputs differ or the bound does not hold.
Run: make examples   (or: .venv/bin/python examples/sliding_window_blk.py)
"""
import sys
import time

import numpy as np

import fattn
from fattn import reference

from fattn.bounds import prefill_bound, within

rng = np.random.default_rng(3)
B, H, L, D, W = 1, 8, 2048, 64, 128  # each query sees itself and the W - 1 keys before it
dtype = np.float16
q, k, v = (rng.standard_normal((B, H, L, D)).astype(dtype) for _ in range(3))

i, j = np.arange(L)[:, None], np.arange(L)[None, :]
mask = (j <= i) & (j > i - W)  # bool [Lq, Lk], True = attend; broadcast over B and H

bq, bk = fattn.prefill_geometry(D)
blk = fattn.flash_attn_prefill_blk(mask, head_dim=D)  # uint8 [ceil(L/BQ), ceil(L/BK)]
skipped, no_add = np.mean(blk == 0), np.mean(blk == 2)
print(f"L={L}, window={W}, tiles of {bq}x{bk}: map {blk.shape}, {skipped:.1%} of tiles skipped, "
      f"{no_add:.1%} without the mask add, {np.mean(blk == 1):.1%} full work")


def best_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, min(times)


out_plain, t_plain = best_time(lambda: fattn.flash_attn_prefill(q, k, v, mask))
out_blk, t_blk = best_time(lambda: fattn.flash_attn_prefill(q, k, v, mask, blk=blk))
identical = np.array_equal(out_plain.view(np.uint16), out_blk.view(np.uint16))
print(f"without blk {t_plain * 1e3:7.1f} ms\nwith blk    {t_blk * 1e3:7.1f} ms  "
      f"({t_plain / t_blk:.1f}x faster, {1 - t_blk / t_plain:.0%} of the time saved)")
print(f"outputs bit-identical: {identical}")

# Against exact attention, on two heads (a float64 score matrix per head is L*L*8 bytes).
hs = slice(0, 2)
exact = reference.attention(q[:, hs], k[:, hs], v[:, hs], mask)
ok, err, allowed = within(out_blk[:, hs], exact, prefill_bound(q[:, hs], k[:, hs], v[:, hs], mask)[0])
ok = bool(ok.all())
print(f"vs float64 reference (heads 0-1): max err {err.max():.2e}, err/bound {(err / allowed).max():.3f}")

if not identical or not ok:
    print("FAILED:", "outputs differ with blk" if not identical else "outside the stated bound")
    sys.exit(1)
