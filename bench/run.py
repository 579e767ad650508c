"""Placeholder until the speed issue: times fattn.sdpa against a NumPy implementation in one run."""
import statistics
import time

import numpy as np

import fattn


def numpy_sdpa(q, k, v):
    s = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(q.shape[-1])
    lq, lk = s.shape[-2:]
    s = np.where(np.arange(lk)[None, :] <= np.arange(lq)[:, None] + lk - lq, s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhij,bhjd->bhid", w / w.sum(-1, keepdims=True), v)


def timed(fn, repeats=5):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times) - min(times)


rng = np.random.default_rng(0)
q, k, v = (rng.standard_normal((1, 8, 512, 64)).astype(np.float32) for _ in range(3))
for name, fn in (("fattn.sdpa", lambda: fattn.sdpa(q, k, v)), ("numpy", lambda: numpy_sdpa(q, k, v))):
    med, spread = timed(fn)
    print(f"{name:12s} L=512 D=64 H=8 f32 causal: median {med * 1e3:7.2f} ms (spread {spread * 1e3:.2f} ms)")
