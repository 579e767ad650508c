"""Attention with fattn, held against the float64 NumPy reference.

Run: make demo   (or: .venv/bin/python examples/quickstart.py)
Exits non-zero if an output lies outside the tolerance docs/numerics.md states for sdpa.
"""
import sys
import time

import ml_dtypes
import numpy as np

import fattn
from fattn import reference

from fattn.bounds import sdpa_tolerance

rng = np.random.default_rng(0)
failed = False
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
    allowed = sdpa_tolerance(dtype, exact, v[:, :, :kv_seq_len])  # 1e-5*max|v| (+ 1 ulp for bf16)
    ok = bool(np.all(err <= allowed))
    failed |= not ok
    print(f"fattn.sdpa  dtype={np.dtype(dtype).name:8s} q{q.shape} k{k.shape} kv_seq_len={kv_seq_len} "
          f"-> out{out.shape} {out.dtype}")
    print(f"    max |fattn - float64 reference| = {err.max():.3g}  (max |out| = {np.abs(exact).max():.3g})")
    print(f"    max err / allowed = {(err / allowed).max():.3f}  -> {'OK' if ok else 'OUTSIDE THE STATED TOLERANCE'}")
    print(f"    time: fattn {t_fattn * 1e3:.2f} ms, NumPy float64 reference {t_ref * 1e3:.2f} ms")

info = fattn.build_info()
print(f"fattn {fattn.__version__}: {info['compiler']}, isa={info['isa']}, threads={info['num_threads']}")
sys.exit(1 if failed else 0)
