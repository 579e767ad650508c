"""Hashes the outputs of a fixed sweep of calls: a refactor that must change no bit is checked by
running this before and after it and comparing the two files.

    python bench/bitsweep.py > before.json     # on the old revision's build
    python bench/bitsweep.py > after.json      # on the new one
    python bench/bitsweep.py --compare before.json after.json

The sweep covers every public kernel, the three dtypes, masks (bool, additive, broadcast), causal,
GQA, both layouts, the blk map, LSE, the decode masks and softcap, lengths that are not multiples
of the tiles, and every instruction-set path this machine runs (emulated ones included); each
case's outputs are hashed (SHA-256 of their bytes), per path.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys

import ml_dtypes
import numpy as np

import fattn

BF16, F16, F32 = np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float32)


def digest(result) -> str:
    parts = result if isinstance(result, tuple) else (result,)
    h = hashlib.sha256()
    for p in parts:
        a = np.ascontiguousarray(np.asarray(p))
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.view(np.uint8).tobytes())
    return h.hexdigest()[:16]


def cases():
    rng = np.random.default_rng(20261206)

    def r(shape, dtype):
        return rng.standard_normal(shape).astype(dtype)

    for dt in (F32, F16, BF16):
        for d in (40, 64, 128, 256):
            q, k, v = r((2, 4, 37, d), dt), r((2, 2, 53, d), dt), r((2, 2, 53, d), dt)
            mask_b = rng.random((37, 53)) > 0.3
            mask_a = np.where(rng.random((2, 1, 37, 53)) > 0.2, rng.standard_normal((2, 1, 37, 53)), -np.inf).astype(dt)
            yield f"prefill/{dt}/D{d}", lambda q=q, k=k, v=v: fattn.flash_attn_prefill(q, k, v, return_lse=True)
            yield f"prefill/{dt}/D{d}/causal", lambda q=q, k=k, v=v: fattn.flash_attn_prefill(q, k, v, causal=True)
            yield f"prefill/{dt}/D{d}/bool", lambda q=q, k=k, v=v, m=mask_b: fattn.flash_attn_prefill(q, k, v, m)
            yield (f"prefill/{dt}/D{d}/additive+causal",
                   lambda q=q, k=k, v=v, m=mask_a: fattn.flash_attn_prefill(q, k, v, m, causal=True, return_lse=True))
            yield (f"prefill/{dt}/D{d}/blhd", lambda q=q, k=k, v=v: fattn.flash_attn_prefill(
                q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), layout="blhd",
                scale=0.3))
            yield (f"prefill/{dt}/D{d}/ktile8", lambda q=q, k=k, v=v: fattn.flash_attn_prefill(q, k, v, k_tile=8,
                                                                                              q_tile=5))
            ql = r((1, 2, 20, 512), dt) if d == 40 else None
            if ql is not None:
                kl, vl = r((1, 1, 150, 512), dt), r((1, 1, 150, 512), dt)
                ml = np.where(rng.random((20, 150)) > 0.1, 0.0, -np.inf).astype(dt)
                yield f"prefill/{dt}/llamacpp", lambda q=ql, k=kl, v=vl, m=ml: fattn.flash_attn_prefill(
                    q, k, v, m, kernel="llamacpp", causal=True, return_lse=True)
                yield f"prefill/{dt}/D512", lambda q=ql, k=kl, v=vl: fattn.flash_attn_prefill(q, k, v)
            yield f"sdpa/{dt}/D{d}", lambda q=q, k=k, v=v: fattn.sdpa(q, k, v, causal=False)
            yield f"sdpa/{dt}/D{d}/causal40", lambda q=q, k=k, v=v: fattn.sdpa(q, k, v, kv_seq_len=40)
        L = 300
        i, j = np.arange(L)[:, None], np.arange(L)[None, :]
        window = np.where((j <= i) & (j > i - 64), 0.0, -np.inf).astype(dt)
        qw, kw, vw = r((1, 2, L, 64), dt), r((1, 2, L, 64), dt), r((1, 2, L, 64), dt)
        blk = fattn.flash_attn_prefill_blk(window, head_dim=64)
        yield f"prefill/{dt}/window+blk", lambda q=qw, k=kw, v=vw, m=window, b=blk: fattn.flash_attn_prefill(
            q, k, v, m, blk=b, return_lse=True)
        yield f"blk/{dt}", lambda m=window: fattn.flash_attn_prefill_blk(m, head_dim=64)
    for cache in (F32, F16, BF16):
        for d, h, hkv in ((64, 4, 4), (128, 8, 2), (256, 4, 1), (96, 6, 3)):
            qd = r((2, h, d), F32)
            kc, vc = r((2, hkv, 700, d), cache), r((2, hkv, 700, d), cache)
            for n in (1, 33, 650):
                yield f"vec/{cache}/D{d}/H{h}/{n}", lambda q=qd, k=kc, v=vc, n=n: fattn.flash_attn_vec(
                    q, k, v, kv_seq_len=n, return_lse=True)
            yield f"vec/{cache}/D{d}/window", lambda q=qd, k=kc, v=vc: fattn.flash_attn_vec(
                q, k, v, kv_seq_len=600, mask="sliding_window", window=100, nwg=7)
            yield f"vec/{cache}/D{d}/softcap", lambda q=qd, k=kc, v=vc: fattn.flash_attn_vec(
                q, k, v, kv_seq_len=500, softcap=5.0, scale=0.2, mask="causal")
            yield f"vec_partials/{cache}/D{d}", lambda q=qd, k=kc, v=vc: fattn.flash_attn_vec_partials(
                q, k, v, kv_seq_len=640, nwg=16)
    o1, l1 = fattn.flash_attn_prefill(r((1, 2, 30, 64), F32), r((1, 2, 40, 64), F32), r((1, 2, 40, 64), F32),
                                      return_lse=True)
    o2, l2 = fattn.flash_attn_prefill(r((1, 2, 30, 64), F32), r((1, 2, 20, 64), F32), r((1, 2, 20, 64), F32),
                                      return_lse=True)
    yield "merge", lambda: fattn.merge_attention([o1, o2], [l1, l2], return_lse=True)
    x = r((4099,), F32) * 1e3
    yield "round_to/bf16", lambda: fattn.round_to(x, BF16)
    yield "round_to/f16", lambda: fattn.round_to(x, F16)


def sweep() -> dict:
    saved = fattn.get_num_threads()
    result = {}
    try:
        for isa in fattn.available_isas(include_emulated=True):
            fattn.set_isa(isa)
            for threads in (1, 2):
                fattn.set_num_threads(threads)
                for name, call in cases():
                    result[f"{isa}/t{threads}/{name}"] = digest(call())
    finally:
        fattn.set_num_threads(saved)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args()
    if args.compare:
        a, b = (json.load(open(p)) for p in args.compare)
        common = sorted(set(a) & set(b))
        diff = [n for n in common if a[n] != b[n]]
        for n in diff:
            print(f"DIFFERS  {n}: {a[n]} -> {b[n]}")
        print(f"{len(common)} cases in both, {len(diff)} differ; only before: {len(set(a) - set(b))}, "
              f"only after: {len(set(b) - set(a))}")
        return 1 if diff or not common else 0
    json.dump(sweep(), sys.stdout, indent=0, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
