"""Bad calls: the right exception type and a message naming the argument."""
import numpy as np
import pytest

import fattn
from helpers import BF16, F16, F32


def arrays(q=(1, 4, 3, 8), kv=(1, 2, 5, 8), dtype=F32, k_dtype=None, v_dtype=None):
    q_ = np.ones(q, dtype=dtype)
    k_ = np.ones(kv, dtype=k_dtype or dtype)
    v_ = np.ones(kv, dtype=v_dtype or dtype)
    return q_, k_, v_


SDPA_BAD_CALLS = [
    # (id, args, kwargs, exception, message fragment)
    ("q zero batch", arrays(q=(0, 4, 3, 8)), {}, ValueError, "q: every extent must be > 0, got B = 0"),
    ("q zero heads", arrays(q=(1, 0, 3, 8)), {}, ValueError, "q: every extent must be > 0, got H = 0"),
    ("q zero length", arrays(q=(1, 4, 0, 8)), {}, ValueError, "q: every extent must be > 0, got L = 0"),
    ("q zero head dim", arrays(q=(1, 4, 3, 0), kv=(1, 2, 5, 0)), {}, ValueError, "q: every extent must be > 0"),
    ("k zero capacity", arrays(kv=(1, 2, 0, 8)), {}, ValueError, "k: every extent must be > 0, got L = 0"),
    ("H not divisible by H_kv", arrays(q=(1, 6, 3, 8), kv=(1, 4, 5, 8)), {}, ValueError,
     "H (6) must be divisible by the number of K/V heads H_kv (4)"),
    ("mismatched D", arrays(q=(1, 4, 3, 8), kv=(1, 2, 5, 16)), {}, ValueError,
     "k: head dim D (q.shape[3]) must be 8, got 16"),
    ("mismatched batch", arrays(q=(2, 4, 3, 8), kv=(1, 2, 5, 8)), {}, ValueError,
     "k: batch size B (q.shape[0]) must be 2, got 1"),
    ("v shape differs from k", (np.ones((1, 4, 3, 8), F32), np.ones((1, 2, 5, 8), F32), np.ones((1, 2, 4, 8), F32)),
     {}, ValueError, "v: shape must equal k's"),
    ("k dtype differs", arrays(k_dtype=BF16), {}, TypeError, "k: dtype must match q (float32), got bfloat16"),
    ("v dtype differs", arrays(dtype=BF16, v_dtype=F16), {}, TypeError, "v: dtype must match q (bfloat16), got float16"),
    ("unsupported dtype", arrays(dtype=np.float64), {}, TypeError, "q: dtype must be one of"),
    ("integer arrays", arrays(dtype=np.int32), {}, TypeError, "q: dtype must be one of"),
    ("kv_seq_len > capacity", arrays(), {"kv_seq_len": 6}, ValueError,
     "kv_seq_len: must be <= the K/V capacity (k.shape[2] = 5), got 6"),
    ("kv_seq_len zero", arrays(), {"kv_seq_len": 0}, ValueError, "kv_seq_len: must be >= 1, got 0"),
    ("kv_seq_len negative", arrays(), {"kv_seq_len": -1}, ValueError, "kv_seq_len: must be >= 1, got -1"),
    ("kv_seq_len float", arrays(), {"kv_seq_len": 2.0}, TypeError, "kv_seq_len: expected an integer"),
    ("q 3-D", (np.ones((4, 3, 8), F32),) + arrays()[1:], {}, ValueError, "q: expected a 4-D array"),
    ("k 5-D", (arrays()[0], np.ones((1, 1, 2, 5, 8), F32), arrays()[2]), {}, ValueError, "k: expected a 4-D array"),
    ("q is a list", ([[[[1.0]]]],) + arrays(q=(1, 1, 1, 1), kv=(1, 1, 1, 1))[1:], {}, TypeError,
     "q: expected an array, got list"),
    ("v is None", arrays()[:2] + (None,), {}, TypeError, "v: expected an array, got NoneType"),
    ("scale nan", arrays(), {"scale": float("nan")}, ValueError, "scale: must be finite"),
    ("scale inf", arrays(), {"scale": float("inf")}, ValueError, "scale: must be finite"),
    ("scale string", arrays(), {"scale": "0.1"}, TypeError, "scale: expected a real number"),
    ("causal string", arrays(), {"causal": "yes"}, TypeError, "causal: expected a bool"),
]



def prefill_arrays(q=(1, 4, 3, 64), kv=(1, 2, 5, 64), dtype=BF16, k_dtype=None):
    return np.ones(q, dtype=dtype), np.ones(kv, dtype=k_dtype or dtype), np.ones(kv, dtype=dtype)


M35 = np.zeros((3, 5), dtype=np.float32)
PREFILL_BAD_CALLS = [
    ("zero batch", prefill_arrays(q=(0, 4, 3, 64)), {}, ValueError, "q: every extent must be > 0, got B = 0"),
    ("zero q length", prefill_arrays(q=(1, 4, 0, 64)), {}, ValueError, "q: every extent must be > 0, got L = 0"),
    ("zero k length", prefill_arrays(kv=(1, 2, 0, 64)), {}, ValueError, "k: every extent must be > 0, got L = 0"),
    ("zero heads", prefill_arrays(q=(1, 0, 3, 64)), {}, ValueError, "q: every extent must be > 0, got H = 0"),
    ("H % H_kv", prefill_arrays(q=(1, 3, 3, 64)), {}, ValueError,
     "H (3) must be divisible by the number of K/V heads H_kv (2)"),
    ("D mismatch", prefill_arrays(kv=(1, 2, 5, 32)), {}, ValueError, "k: head dim D (q.shape[3]) must be 64, got 32"),
    ("llamacpp needs D=512", prefill_arrays(), {"kernel": "llamacpp"}, ValueError,
     "q: head dim D must be 512 for kernel='llamacpp', got 64"),
    ("unknown kernel", prefill_arrays(), {"kernel": "metal"}, ValueError, "kernel: must be one of"),
    ("nsg 6", prefill_arrays(), {"nsg": 6}, ValueError, "nsg: must be 4 or 8, got 6"),
    ("nsg float", prefill_arrays(), {"nsg": 4.0}, TypeError, "nsg: expected an integer"),
    ("dtype mismatch", prefill_arrays(k_dtype=F16), {}, TypeError, "k: dtype must match q (bfloat16), got float16"),
    ("float64 q", prefill_arrays(dtype=np.float64), {}, TypeError, "q: dtype must be one of"),
    ("mask wrong shape", prefill_arrays(), {"mask": np.zeros((3, 6), np.float32)}, ValueError,
     "mask: shape (3, 6) does not broadcast to [B, H, Lq, Lk] = [1, 4, 3, 5]"),
    ("mask rank 1", prefill_arrays(), {"mask": np.zeros(5, np.float32)}, ValueError, "mask: expected [Lq, Lk]"),
    ("mask int dtype", prefill_arrays(), {"mask": np.zeros((3, 5), np.int32)}, TypeError,
     "mask: dtype must be bool (True = attend) or an additive float32, float16 or bfloat16, got int32"),
    ("mask float64", prefill_arrays(), {"mask": np.zeros((3, 5))}, TypeError, "mask: dtype must be bool"),
    ("mask not an array", prefill_arrays(), {"mask": [[0.0] * 5] * 3}, TypeError, "mask: expected an array, got list"),
    ("blk without mask", prefill_arrays(), {"blk": np.ones((1, 1), np.uint8)}, ValueError,
     "blk: a tile-skip map needs the mask it was built from"),
    ("blk wrong shape", prefill_arrays(), {"mask": M35, "blk": np.ones((1, 2), np.uint8)}, ValueError,
     "blk: shape must be [ceil(Lq/32), ceil(Lk/16)] = [1, 1] for kernel='candle', got [1, 2]"),
    ("blk wrong dtype", prefill_arrays(), {"mask": M35, "blk": np.ones((1, 1), np.int64)}, TypeError,
     "blk: dtype must be uint8"),
    ("blk 1-D", prefill_arrays(), {"mask": M35, "blk": np.ones(1, np.uint8)}, ValueError, "blk: expected a 2-D"),
    ("blk bad value", prefill_arrays(), {"mask": M35, "blk": np.full((1, 1), 3, np.uint8)}, ValueError,
     "blk: entries must be 0, 1 or 2, got 3"),
    ("layout unknown", prefill_arrays(), {"layout": "hbld"}, ValueError, "layout: must be one of"),
    ("q 3-D", (np.ones((4, 3, 64), BF16),) + prefill_arrays()[1:], {}, ValueError, "q: expected a 4-D array"),
    ("scale nan", prefill_arrays(), {"scale": float("nan")}, ValueError, "scale: must be finite"),
    ("k_tile not power of two", prefill_arrays(), {"k_tile": 24}, ValueError,
     "k_tile: must be a power of two from 8 to 1024"),
    ("q_tile zero", prefill_arrays(), {"q_tile": 0}, ValueError, "q_tile: must be from 1 to 1024, got 0"),
    ("llamacpp k_tile", prefill_arrays(q=(1, 4, 3, 512), kv=(1, 2, 5, 512)), {"kernel": "llamacpp", "k_tile": 32},
     ValueError, "k_tile: kernel='llamacpp' works on chunks of 64 keys, got 32"),
    ("causal not bool", prefill_arrays(), {"causal": 1}, TypeError, "causal: expected a bool"),
    ("return_lse not bool", prefill_arrays(), {"return_lse": "yes"}, TypeError, "return_lse: expected a bool"),
]



BLK_BAD_CALLS = [
    ("no geometry", (M35,), {}, ValueError, "head_dim: needed to choose the tile geometry"),
    ("mask rank 3", (np.zeros((1, 3, 5), np.float32),), {"head_dim": 64}, ValueError,
     "mask: expected [Lq, Lk] or [B, H, Lq, Lk]"),
    ("mask int", (np.zeros((3, 5), np.int8),), {"head_dim": 64}, TypeError, "mask: dtype must be bool"),
    ("mask zero rows", (np.zeros((0, 5), np.float32),), {"head_dim": 64}, ValueError,
     "mask: every extent must be > 0"),
    ("bad kernel", (M35,), {"head_dim": 64, "kernel": "x"}, ValueError, "kernel: must be one of"),
    ("bad k_tile", (M35,), {"head_dim": 64, "k_tile": 12}, ValueError, "k_tile: must be a power of two"),
    ("not an array", ([[0.0]],), {"head_dim": 64}, TypeError, "mask: expected an array, got list"),
]



def vec_arrays(q=(4, 64), kv=(2, 10, 64), q_dtype=F32, kv_dtype=F16, v_dtype=None):
    return np.ones(q, q_dtype), np.ones(kv, kv_dtype), np.ones(kv, v_dtype or kv_dtype)


VEC_BAD_CALLS = [
    ("head dim 48", vec_arrays(q=(4, 48), kv=(2, 10, 48)), {"kv_seq_len": 5}, ValueError,
     "q: head dim D must be a multiple of 32 up to 512 (the seed has 256 and 512), got 48"),
    ("head dim 1024", vec_arrays(q=(4, 1024), kv=(2, 10, 1024)), {"kv_seq_len": 5}, ValueError,
     "head dim D must be a multiple of 32 up to 512"),
    ("zero heads", vec_arrays(q=(0, 64)), {"kv_seq_len": 5}, ValueError, "q: every extent must be > 0, got H = 0"),
    ("zero kv heads", vec_arrays(kv=(0, 10, 64)), {"kv_seq_len": 5}, ValueError,
     "k_cache: every extent must be > 0"),
    ("H % H_kv", vec_arrays(q=(3, 64)), {"kv_seq_len": 5}, ValueError, "H (3) must be divisible by"),
    ("kv_seq_len 0", vec_arrays(), {"kv_seq_len": 0}, ValueError, "kv_seq_len: must be >= 1, got 0"),
    ("capacity < kv_seq_len", vec_arrays(), {"kv_seq_len": 11}, ValueError,
     "kv_seq_len: must be <= the cache capacity (10), got 11"),
    ("kv_seq_len missing", vec_arrays(), {}, TypeError, "kv_seq_len"),
    ("q f16", vec_arrays(q_dtype=F16), {"kv_seq_len": 5}, TypeError, "q: dtype must be float32"),
    ("k/v dtypes differ", vec_arrays(v_dtype=F32), {"kv_seq_len": 5}, TypeError,
     "v_cache: dtype must match k_cache (float16), got float32"),
    ("k int8", vec_arrays(kv_dtype=np.int8), {"kv_seq_len": 5}, TypeError, "k_cache: dtype must be one of"),
    ("rank mismatch", (np.ones((4, 64), F32), np.ones((1, 2, 10, 64), F16), np.ones((1, 2, 10, 64), F16)),
     {"kv_seq_len": 5}, ValueError, "k_cache: expected [H_kv, capacity, D] to go with q of shape (4, 64)"),
    ("q 1-D", (np.ones(64, F32),) + vec_arrays()[1:], {"kv_seq_len": 5}, ValueError, "q: expected [H, D] or [B, H, D]"),
    ("batch mismatch", (np.ones((2, 4, 64), F32), np.ones((1, 2, 10, 64), F16), np.ones((1, 2, 10, 64), F16)),
     {"kv_seq_len": 5}, ValueError, "k_cache: batch size B (q's) must be 2, got 1"),
    ("D mismatch", (np.ones((4, 64), F32), np.ones((2, 10, 32), F16), np.ones((2, 10, 32), F16)),
     {"kv_seq_len": 5}, ValueError, "k_cache: head dim D (q's) must be 64, got 32"),
    ("v shape", (np.ones((4, 64), F32), np.ones((2, 10, 64), F16), np.ones((2, 9, 64), F16)), {"kv_seq_len": 5},
     ValueError, "v_cache: shape must equal k_cache's"),
    ("mask name", vec_arrays(), {"kv_seq_len": 5, "mask": "window"}, ValueError, "mask: must be one of"),
    ("window negative", vec_arrays(), {"kv_seq_len": 5, "mask": "sliding_window", "window": -1}, ValueError,
     "window: must be >= 0, got -1"),
    ("window float", vec_arrays(), {"kv_seq_len": 5, "window": 2.5}, TypeError, "window: expected an integer"),
    ("nwg 0", vec_arrays(), {"kv_seq_len": 5, "nwg": 0}, ValueError, "nwg: must be from 1 to 64, got 0"),
    ("nwg 65", vec_arrays(), {"kv_seq_len": 5, "nwg": 65}, ValueError, "nwg: must be from 1 to 64, got 65"),
    ("softcap negative", vec_arrays(), {"kv_seq_len": 5, "softcap": -1.0}, ValueError, "softcap: must be finite"),
    ("softcap nan", vec_arrays(), {"kv_seq_len": 5, "softcap": float("nan")}, ValueError, "softcap: must be finite"),
    ("scale inf", vec_arrays(), {"kv_seq_len": 5, "scale": float("inf")}, ValueError, "scale: must be finite"),
    ("cache not array", (np.ones((4, 64), F32), "cache", np.ones((2, 10, 64), F16)), {"kv_seq_len": 5}, TypeError,
     "k_cache: expected an array, got str"),
]



O = np.zeros((4, 8, 64), np.float32)
S = np.zeros((4, 8), np.float32)
REDUCE_BAD_CALLS = [
    ("o f16", (O.astype(F16), S, S), {}, TypeError, "o: dtype must be float32"),
    ("s shape", (O, S[:, :4], S), {}, ValueError, "s: shape must be o's without D"),
    ("o 2-D", (O[0], S, S), {}, ValueError, "o: expected [H, nwg, D] or [B, H, nwg, D]"),
    ("nwg 65", (np.zeros((4, 65, 64), np.float32), np.zeros((4, 65), np.float32), np.zeros((4, 65), np.float32)),
     {}, ValueError, "nwg (the group axis) must be from 1 to 64"),
]



OUT = np.zeros((3, 8), np.float32)
LSE = np.zeros(3, np.float32)
MERGE_BAD_CALLS = [
    ("empty", ([], []), {}, ValueError, "outputs: need at least one"),
    ("count mismatch", ([OUT, OUT], [LSE]), {}, ValueError, "lses: need one per output (2), got 1"),
    ("shape mismatch", ([OUT, OUT[:2]], [LSE, LSE]), {}, ValueError, "outputs[1]: shape must be (3, 8)"),
    ("lse shape", ([OUT], [LSE[:2]]), {}, ValueError, "lses[0]: shape must be (3,)"),
    ("array not list", (np.stack([OUT, OUT]), [LSE, LSE]), {}, TypeError, "expected sequences"),
    ("int outputs", ([OUT.astype(np.int32)], [LSE]), {}, TypeError, "outputs[0]: dtype must be one of"),
    ("not arrays", ([[1.0]], [LSE]), {}, TypeError, "outputs[0]: expected an array, got list"),
]



# Every table, with the function it calls: one test, one row per bad call.
BAD_CALLS = ([(fattn.sdpa,) + row for row in SDPA_BAD_CALLS]
             + [(fattn.flash_attn_prefill,) + row for row in PREFILL_BAD_CALLS]
             + [(fattn.flash_attn_prefill_blk,) + row for row in BLK_BAD_CALLS]
             + [(fattn.flash_attn_vec,) + row for row in VEC_BAD_CALLS]
             + [(fattn.flash_attn_vec_partials,) + row for row in VEC_BAD_CALLS]
             + [(fattn.flash_attn_vec_reduce,) + row for row in REDUCE_BAD_CALLS]
             + [(fattn.merge_attention,) + row for row in MERGE_BAD_CALLS])


@pytest.mark.parametrize("fn, args, kwargs, exc, fragment", [(c[0],) + c[2:] for c in BAD_CALLS],
                         ids=[f"{c[0].__name__}-{c[1]}" for c in BAD_CALLS])
def test_bad_call_raises_naming_the_argument(fn, args, kwargs, exc, fragment):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    assert fragment in str(info.value)
