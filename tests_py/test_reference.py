"""reference.attention against a loop written straight from the definition."""
import numpy as np
import pytest

from fattn import reference
from helpers import BF16


def loop_attention(q, k, v, allowed, scale):
    """One row at a time, from the definition, in float64."""
    b_, h_, lq, d = q.shape
    group = h_ // k.shape[1]
    out = np.zeros(q.shape)
    lse = np.full(q.shape[:3], -np.inf)
    for b in range(b_):
        for h in range(h_):
            for i in range(lq):
                keys = [j for j in range(k.shape[2]) if allowed(b, h, i, j)]
                if not keys:
                    continue
                s = np.array([q[b, h, i] @ k[b, h // group, j] * scale for j in keys])
                w = np.exp(s - s.max())
                out[b, h, i] = (w[:, None] * v[b, h // group, keys]).sum(0) / w.sum()
                lse[b, h, i] = s.max() + np.log(w.sum())
    return out, lse


@pytest.mark.parametrize("causal", [None, "top_left", "bottom_right"])
@pytest.mark.parametrize("window", [None, 1, 3])
@pytest.mark.parametrize("lq, lk", [(4, 6), (6, 4), (5, 5)])
def test_positions_causal_and_window(rng, causal, window, lq, lk):
    q = rng.standard_normal((2, 4, lq, 8))
    k, v = rng.standard_normal((2, 2, lk, 8)), rng.standard_normal((2, 2, lk, 8))
    offset = 0 if causal == "top_left" else lk - lq

    def allowed(b, h, i, j):
        pos = i + offset
        return (causal is None or j <= pos) and (window is None or j > pos - window)

    want, want_lse = loop_attention(q, k, v, allowed, 1 / np.sqrt(8))
    got, lse = reference.attention(q, k, v, causal=causal, window=window, return_lse=True)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-12)


def test_bool_and_additive_masks_agree_and_broadcast(rng):
    q, k, v = (rng.standard_normal((2, 3, 5, 4)) for _ in range(3))
    keep = rng.random((5, 5)) > 0.4
    keep[2] = False  # a fully masked row
    additive = np.where(keep, 0.0, -np.inf)
    a = reference.attention(q, k, v, keep)
    b = reference.attention(q, k, v, additive.astype(BF16))
    c = reference.attention(q, k, v, np.broadcast_to(additive, (2, 3, 5, 5)))
    assert (a == b).all() and (a == c).all()
    assert (a[:, :, 2] == 0).all()
    _, lse = reference.attention(q, k, v, keep, return_lse=True)
    assert np.isneginf(lse[:, :, 2]).all() and np.isfinite(lse[:, :, [0, 1, 3, 4]]).all()


def test_additive_bias_and_softcap(rng):
    q, k, v = (rng.standard_normal((1, 1, 3, 4)) for _ in range(3))
    bias = rng.standard_normal((3, 3))
    s = np.einsum("id,jd->ij", q[0, 0], k[0, 0]) * 0.5
    s = 2.0 * np.tanh(s / 2.0) + bias
    w = np.exp(s - s.max(1, keepdims=True))
    want = (w / w.sum(1, keepdims=True)) @ v[0, 0]
    got = reference.attention(q, k, v, bias, scale=0.5, softcap=2.0)
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-12)


def test_seq_major_layout_is_a_transpose(rng):
    q, k, v = (rng.standard_normal((2, 5, 4, 8)) for _ in range(3))  # [B, L, H, D]
    got = reference.attention(q, k, v, layout="blhd", causal="top_left")
    t = lambda x: x.transpose(0, 2, 1, 3)
    want = t(reference.attention(t(q), t(k), t(v), causal="top_left"))
    assert (got == want).all()


def test_rejects_bad_arguments(rng):
    q = rng.standard_normal((1, 3, 2, 4))
    k = rng.standard_normal((1, 2, 2, 4))
    with pytest.raises(ValueError, match="divisible"):
        reference.attention(q, k, k)
    with pytest.raises(ValueError, match="causal"):
        reference.attention(q, q, q, causal=True)
    with pytest.raises(ValueError, match="layout"):
        reference.attention(q, q, q, layout="hbld")
