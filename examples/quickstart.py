"""Attention with fattn, held against the float64 NumPy reference.

Run: make demo   (or: .venv/bin/python examples/quickstart.py)
"""
import time

import ml_dtypes
import numpy as np

import fattn
from fattn import reference

rng = np.random.default_rng(0)
B, H, H_kv, Lq, capacity, kv_seq_len, D = 1, 8, 2, 64, 512, 448, 128

for dtype in (np.float32, ml_dtypes.bfloat16):
    q = rng.standard_normal((B, H, Lq, D)).astype(dtype)
    k = rng.standard_normal((B, H_kv, capacity, D)).astype(dtype)  # a KV cache with spare capacity
    v = rng.standard_normal((B, H_kv, capacity, D)).astype(dtype)

    t0 = time.perf_counter()
    out = fattn.sdpa(q, k, v, causal=True, kv_seq_len=kv_seq_len)
    t_fattn = time.perf_counter() - t0

    t0 = time.perf_counter()
    exact = reference.attention(q, k[:, :, :kv_seq_len], v[:, :, :kv_seq_len], causal="bottom_right")
    t_ref = time.perf_counter() - t0

    err = np.abs(out.astype(np.float64) - exact)
    print(f"fattn.sdpa  dtype={np.dtype(dtype).name:8s} q{q.shape} k{k.shape} kv_seq_len={kv_seq_len} "
          f"-> out{out.shape} {out.dtype}")
    print(f"    max |fattn - float64 reference| = {err.max():.3g}  (max |out| = {np.abs(exact).max():.3g})")
    print(f"    time: fattn {t_fattn * 1e3:.2f} ms, NumPy float64 reference {t_ref * 1e3:.2f} ms")

info = fattn.build_info()
print(f"fattn {fattn.__version__}: {info['compiler']}, isa={info['isa']}, threads={info['num_threads']}")
