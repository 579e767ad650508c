"""Thread safety: many Python threads calling every kernel at once get the serial bits; changing
the thread count while calls run is safe; the GIL is released while a kernel runs."""
import random
import threading
import time

import numpy as np
import pytest

import fattn
from helpers import BF16, F16, F32

N_THREADS = 8
ROUNDS = 3
# A deadlock guard, not a speed check: at least 120 s, and at least 50 times what the same
# calls take serially on this CPU (measured in the `serial` fixture), so that only a deadlock
# reaches it on a CPU of any speed.
TIMEOUT = 120.0


def calls(seed=7):
    """Every public kernel, as (name, zero-argument call), on small but multi-tile inputs."""
    rng = np.random.default_rng(seed)

    def r(shape, dtype):
        return rng.standard_normal(shape).astype(dtype)

    q, k, v = r((2, 4, 70, 64), BF16), r((2, 2, 90, 64), BF16), r((2, 2, 90, 64), BF16)
    q5, k5, v5 = r((1, 2, 20, 512), F16), r((1, 1, 70, 512), F16), r((1, 1, 70, 512), F16)
    mask = r((70, 90), F32)
    mask[:, 40:60] = -np.inf
    blk = fattn.flash_attn_prefill_blk(mask, head_dim=64)
    qs, ks, vs = r((1, 4, 33, 32), F32), r((1, 2, 50, 32), F32), r((1, 2, 50, 32), F32)
    qd, kd, vd = r((2, 8, 128), F32), r((2, 2, 300, 128), F16), r((2, 2, 300, 128), F16)
    o, s, m = fattn.flash_attn_vec_partials(qd, kd, vd, kv_seq_len=250, nwg=8)
    out1, lse1 = fattn.flash_attn_prefill(q, k[:, :, :45], v[:, :, :45], return_lse=True)
    out2, lse2 = fattn.flash_attn_prefill(q, k[:, :, 45:], v[:, :, 45:], return_lse=True)
    x = r((1000,), F32)
    return [
        ("sdpa", lambda: fattn.sdpa(qs, ks, vs, kv_seq_len=45)),
        ("prefill", lambda: fattn.flash_attn_prefill(q, k, v, mask, causal=True, return_lse=True)),
        ("prefill_blk_map", lambda: fattn.flash_attn_prefill(q, k, v, mask, blk=blk)),
        ("prefill_llamacpp", lambda: fattn.flash_attn_prefill(q5, k5, v5, kernel="llamacpp", causal=True)),
        ("prefill_blk", lambda: fattn.flash_attn_prefill_blk(mask, head_dim=64)),
        ("vec", lambda: fattn.flash_attn_vec(qd, kd, vd, kv_seq_len=250, mask="sliding_window", window=100)),
        ("vec_partials", lambda: fattn.flash_attn_vec_partials(qd, kd, vd, kv_seq_len=250, nwg=8)),
        ("vec_reduce", lambda: fattn.flash_attn_vec_reduce(o, s, m)),
        ("merge", lambda: fattn.merge_attention([out1, out2], [lse1, lse2], return_lse=True)),
        ("round_to", lambda: fattn.round_to(x, BF16)),
    ]


def as_bits(result):
    parts = result if isinstance(result, tuple) else (result,)
    return [np.ascontiguousarray(p).view(np.uint8).tobytes() for p in parts]


def run_threads(targets, timeout=TIMEOUT):
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t for t in threads if t.is_alive()]
    assert not stuck, f"{len(stuck)} thread(s) still running after {timeout} s (deadlock?)"


def hammer(work, expect, flip_threads=False, timeout=TIMEOUT):
    """N_THREADS threads each run every call ROUNDS times in their own order; returns mismatches."""
    errors, mismatches = [], []
    start = threading.Barrier(N_THREADS + (1 if flip_threads else 0))
    done = threading.Event()

    def worker(index):
        try:
            order = list(range(len(work))) * ROUNDS
            random.Random(index).shuffle(order)
            start.wait()
            for i in order:
                name, call = work[i]
                if as_bits(call()) != expect[name]:
                    mismatches.append((index, name))
        except BaseException as e:  # reported below; a thread's exception would be lost
            errors.append(e)

    def flipper():
        try:
            rnd = random.Random(99)
            start.wait()
            while not done.is_set():
                fattn.set_num_threads(rnd.choice([1, 2, 3, 4, 8]))
                time.sleep(0.001)
        except BaseException as e:
            errors.append(e)

    workers = [lambda i=i: worker(i) for i in range(N_THREADS)]
    if flip_threads:
        flip = threading.Thread(target=flipper, daemon=True)
        flip.start()
    try:
        run_threads(workers, timeout)
    finally:
        done.set()
        if flip_threads:
            flip.join(timeout)
            assert not flip.is_alive(), "set_num_threads did not return (deadlock?)"
    assert not errors, errors
    return mismatches


@pytest.fixture
def serial(restore_threads):
    """The calls, their serial bits, and a deadlock timeout scaled from their serial time."""
    work = calls()
    t0 = time.perf_counter()
    expect = {name: as_bits(call()) for name, call in work}
    serial_time = time.perf_counter() - t0
    return work, expect, max(TIMEOUT, 50 * N_THREADS * ROUNDS * serial_time)


@pytest.mark.parametrize("isa", fattn.available_isas())
def test_concurrent_calls_give_the_serial_bits(serial, isa):
    work, expect, timeout = serial
    saved = fattn.build_info()["isa"]
    fattn.set_isa(isa)
    try:
        expect_isa = {name: as_bits(call()) for name, call in work}
        assert expect_isa == expect  # every path gives the same bits anyway
        assert hammer(work, expect, timeout=timeout) == []
    finally:
        fattn.set_isa(saved)


def test_changing_the_thread_count_during_calls_is_safe(serial):
    work, expect, timeout = serial
    fattn.set_num_threads(4)
    assert hammer(work, expect, flip_threads=True, timeout=timeout) == []


def _sdpa_problem(lq, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((1, 8, lq, 64)).astype(F32)
    kv = rng.standard_normal((1, 8, 768, 64)).astype(F32)
    return q, kv


def test_the_gil_is_released_while_a_kernel_runs(restore_threads):
    """Python runs in another thread while a kernel call is under way.

    The proof reads no clock: the kernel writes its output row by row into `out`, which starts
    as NaN, and the main thread polls the first and the last row. "First row written, last row
    not yet" is a state that exists only inside the call, so the main thread can see it only
    if it ran Python while the call was under way, i.e. if the call released the GIL. With the
    GIL held for the whole call the main thread is blocked until the call returns and sees
    either nothing written or everything: the test cannot pass then, on any CPU.

    The only thing speed could affect is whether the poller gets scheduled inside the window.
    The problem is sized from a measured call so that the window lasts ~0.2 s on this CPU
    (a CPU twice as fast gets twice the rows), and if the window was still missed (a machine
    stalled for that long) the call is repeated, twice as large, a few times. Nothing asserts
    on a duration."""
    fattn.set_num_threads(1)  # one worker: rows are written in order, in the calling thread
    probe_q, kv = _sdpa_problem(64)
    fattn.sdpa(probe_q, kv, kv)  # warm-up (scratch, page faults)
    t0 = time.perf_counter()
    fattn.sdpa(probe_q, kv, kv)
    per_row = max(time.perf_counter() - t0, 1e-6) / 64
    lq = int(min(max(0.2 / per_row, 256), 1 << 16))  # ~0.2 s, bounded in both directions

    for attempt in range(4):
        q, _ = _sdpa_problem(lq, seed=attempt)
        out = np.full(q.shape, np.nan, dtype=F32)
        finished = threading.Event()
        errors = []

        def kernel():
            try:
                fattn.sdpa(q, kv, kv, out=out)
            except BaseException as e:  # reported below
                errors.append(e)
            finally:
                finished.set()

        t = threading.Thread(target=kernel, daemon=True)
        t.start()
        seen_inside = False
        while not finished.is_set():
            if not np.isnan(out[0, 0, 0, 0]) and np.isnan(out[0, -1, -1, 0]):
                seen_inside = True
                break
        t.join()
        assert not errors, errors
        np.testing.assert_array_equal(out, fattn.sdpa(q, kv, kv))  # the call itself was undisturbed
        if seen_inside:
            return
        lq = min(2 * lq, 1 << 17)
    pytest.fail("the main thread never ran while a kernel call was under way: is the GIL held?")
