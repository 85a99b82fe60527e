"""Each C++ kernel against the numpy reference (tests/reference.py)."""

import numpy as np
import pytest
import reference as ref

from parrbm import _core

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-13, atol=1e-13)}


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ---- Philox -------------------------------------------------------------------------------

KAT = [  # Random123 known-answer vectors: counter, key, output
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    (
        [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
        [0xA4093822, 0x299F31D0],
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1],
    ),
]


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_philox_known_answers(ctr, key, want):
    assert list(_core.philox4x32(ctr, key)) == want
    got = ref.philox4x32_10(np.array(ctr, np.uint32), tuple(key))
    assert [int(x) for x in got] == want


@pytest.mark.parametrize("rows,cols,case0,unit0", [(3, 17, 0, 0), (5, 33, 7, 5), (1, 1, 2**31, 2**33 + 3)])
def test_uniforms_match_reference(rows, cols, case0, unit0):
    seed = 0x1234_5678_9ABC_DEF0
    got = _core.uniforms(rows, cols, seed=seed, step=9, phase=3, case0=case0, unit0=unit0)
    want = ref.uniforms(rows, cols, seed=seed, step=9, phase=3, case0=case0, unit0=unit0)
    np.testing.assert_array_equal(got, want)
    assert got.min() > 0 and got.max() < 1


# ---- GEMM ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_on_sub_blocks(dtype, ta, tb):
    rng = np.random.default_rng(1)
    big_a, big_b = rand(rng, (40, 50), dtype), rand(rng, (45, 60), dtype)
    a = big_a[3:20, 5:30] if not ta else big_a[3:28, 5:22]  # op(a): 17 x 25
    b = big_b[2:27, 7:39] if not tb else big_b[2:34, 7:32]  # op(b): 25 x 32
    big_c = rand(rng, (30, 70), dtype)
    c = big_c[4:21, 10:42]
    before = big_c.copy()
    want = 0.5 * ((a.T if ta else a) @ (b.T if tb else b)) + 2.0 * c
    _core.gemm(a, b, c, alpha=0.5, beta=2.0, trans_a=ta, trans_b=tb)
    np.testing.assert_allclose(c, want, **TOL[dtype])
    mask = np.ones(big_c.shape, bool)
    mask[4:21, 10:42] = False
    np.testing.assert_array_equal(big_c[mask], before[mask])  # nothing outside the block


def test_gemm_rejects_bad_arguments():
    a = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="inner dimension"):
        _core.gemm(a, np.zeros((5, 2), np.float32), np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        _core.gemm(a, np.zeros((4, 2), np.float64), np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="contiguous rows"):
        _core.gemm(a, np.zeros((4, 4), np.float32)[:, ::2], np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        _core.gemm(a, np.zeros((4, 2), np.float32), np.zeros((3, 3), np.float32))


# ---- sigmoid and sampling ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_matches_reference(dtype):
    x = np.concatenate([np.linspace(-120, 120, 2001), np.linspace(-3, 3, 999)]).astype(dtype)[None, :]
    out = np.empty_like(x)
    _core.sigmoid(x, out)
    want = ref.sigmoid(x)
    tol = dict(rtol=3e-7, atol=1e-30) if dtype == np.float32 else dict(rtol=4e-16, atol=1e-300)
    np.testing.assert_allclose(out, want, **tol)
    assert np.all((out >= 0) & (out <= 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_sigmoid_matches_reference(dtype):
    rng = np.random.default_rng(2)
    pre, bias = rand(rng, (37, 53), dtype), rand(rng, 53, dtype)
    states, probs = np.empty_like(pre), np.empty_like(pre)
    _core.sample_sigmoid(pre, bias, states, probs, seed=77, step=5, phase=2, case0=11, unit0=3)
    p, s = ref.sample_sigmoid(pre, bias, seed=77, step=5, phase=2, case0=11, unit0=3)
    np.testing.assert_allclose(probs, p, **TOL[dtype])
    u = ref.uniforms(37, 53, seed=77, step=5, phase=2, case0=11, unit0=3)
    clear = np.abs(u - p) > 1e-6  # away from ties the bits must agree exactly
    np.testing.assert_array_equal(states[clear], s[clear])
    assert clear.mean() > 0.99


def test_sample_sigmoid_scales_and_in_place():
    rng = np.random.default_rng(3)
    pre = rand(rng, (9, 21), np.float64)
    states, probs = np.empty_like(pre), np.empty_like(pre)
    _core.sample_sigmoid(pre, None, states, probs, seed=1, step=2, phase=0)
    neg_states, neg_probs = np.empty_like(pre), np.empty_like(pre)
    _core.sample_sigmoid(pre, None, neg_states, neg_probs, seed=1, step=2, phase=0, state_value=-0.5, prob_scale=-2.0)
    np.testing.assert_array_equal(neg_states, -0.5 * states)
    np.testing.assert_array_equal(neg_probs, -2.0 * probs)
    inplace = pre.copy()
    _core.sample_sigmoid(inplace, None, inplace, seed=1, step=2, phase=0)
    np.testing.assert_array_equal(inplace, states)


def test_bernoulli_mean_within_four_sigma():
    n = 1_000_000
    for p in (0.5, 0.1, 0.9, 0.01):
        pre = np.full((1000, 1000), np.log(p / (1 - p)), np.float64)
        states = np.empty_like(pre)
        _core.sample_sigmoid(pre, None, states, seed=2024, step=1, phase=0)
        sigma = np.sqrt(p * (1 - p) / n)
        assert abs(states.mean() - p) < 4 * sigma, (p, states.mean())


@pytest.mark.parametrize("dtype", DTYPES)
def test_blocks_sampled_with_global_indices_equal_slices(dtype):
    rng = np.random.default_rng(4)
    pre, bias = rand(rng, (29, 61), dtype), rand(rng, 61, dtype)
    full = np.empty_like(pre)
    _core.sample_sigmoid(pre, bias, full, seed=5, step=3, phase=4)
    for r0, r1, c0, c1 in [(0, 29, 0, 13), (0, 29, 13, 61), (7, 20, 5, 6), (3, 29, 1, 60), (28, 29, 57, 61)]:
        part = np.empty((r1 - r0, c1 - c0), dtype)
        _core.sample_sigmoid(
            np.ascontiguousarray(pre[r0:r1, c0:c1]),
            bias[c0:c1].copy(),
            part,
            seed=5,
            step=3,
            phase=4,
            case0=r0,
            unit0=c0,
        )
        np.testing.assert_array_equal(part, full[r0:r1, c0:c1])
        # and straight on a view of the bigger array, writing into a view
        view_out = np.zeros_like(full)
        _core.sample_sigmoid(
            pre[r0:r1, c0:c1], bias[c0:c1].copy(), view_out[r0:r1, c0:c1], seed=5, step=3, phase=4, case0=r0, unit0=c0
        )
        np.testing.assert_array_equal(view_out[r0:r1, c0:c1], full[r0:r1, c0:c1])


def test_different_keys_give_different_streams():
    base = _core.uniforms(4, 64, seed=1, step=1, phase=1)
    for kw in (
        dict(seed=2, step=1, phase=1),
        dict(seed=1, step=2, phase=1),
        dict(seed=1, step=1, phase=2),
        dict(seed=1 + 2**32, step=1, phase=1),
    ):
        assert not np.array_equal(base, _core.uniforms(4, 64, **kw))


# ---- visible activation ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["binary", "gaussian"])
@pytest.mark.parametrize("sample", [False, True])
def test_visible_activation_matches_reference(dtype, kind, sample):
    rng = np.random.default_rng(5)
    pre, bias, data = rand(rng, (23, 41), dtype), rand(rng, 41, dtype), rand(rng, (23, 41), dtype)
    out = np.empty_like(pre)
    kw = dict(seed=9, step=4, phase=1, case0=2, unit0=6)
    err = _core.visible_activation(pre, bias, out, kind, sample, data, **kw)
    if kind == "binary":
        mean = ref.sigmoid(pre + bias)
    else:
        mean = (pre + bias).astype(dtype)
    np.testing.assert_allclose(
        err, np.sum((data.astype(np.float64) - mean) ** 2), rtol=1e-5 if dtype == np.float32 else 1e-12
    )
    if not sample:
        np.testing.assert_allclose(out, mean, **TOL[dtype])
    elif kind == "binary":
        u = ref.uniforms(23, 41, **kw)
        clear = np.abs(u - mean) > 1e-6
        np.testing.assert_array_equal(out[clear], (u < mean)[clear].astype(dtype))
    else:
        z = ref.normals(23, 41, seed=9, step=4, phase=1 + ref.PHASE_NOISE_OFFSET, case0=2, unit0=6)
        np.testing.assert_allclose(
            out, mean + z, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5 if dtype == np.float32 else 1e-12
        )


def test_gaussian_noise_is_standard_normal():
    pre = np.zeros((500, 2000), np.float64)
    out = np.empty_like(pre)
    _core.visible_activation(pre, None, out, "gaussian", True, seed=3, step=1, phase=1)
    n = out.size
    assert abs(out.mean()) < 4 / np.sqrt(n)
    assert abs(out.var() - 1) < 4 * np.sqrt(2 / n)


def test_visible_activation_rejects_unknown_kind():
    x = np.zeros((2, 2))
    with pytest.raises(ValueError, match="kind"):
        _core.visible_activation(x, None, x.copy(), "poisson", False)


# ---- bit packing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 9), (13, 64), (2, 3), (100, 37)])
def test_pack_unpack_round_trip(dtype, shape):
    rng = np.random.default_rng(6)
    states = (rng.random(shape) < 0.4).astype(dtype)
    packed = _core.pack_bits(states)
    assert packed.dtype == np.uint8 and packed.size == (states.size + 7) // 8
    np.testing.assert_array_equal(packed, ref.pack_bits(states))
    out = np.full(shape, 7, dtype)
    _core.unpack_bits(packed, out)
    np.testing.assert_array_equal(out, states)


def test_pack_bits_of_a_view_and_padding_is_zero():
    rng = np.random.default_rng(7)
    big = (rng.random((10, 20)) < 0.5).astype(np.float32)
    view = big[2:7, 3:14]  # 55 elements: 7 bytes, last one padded
    packed = _core.pack_bits(view)
    np.testing.assert_array_equal(packed, ref.pack_bits(view))
    assert packed[-1] >> 7 == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 63, 64, 65, 100, 200])
def test_pack_columns_matches_reference(dtype, rows):
    rng = np.random.default_rng(8)
    s = (rng.random((rows, 19)) < 0.5).astype(dtype)
    bits, binary = _core.pack_columns(s)
    assert binary
    np.testing.assert_array_equal(bits, ref.pack_columns(s))
    s[0, 0] = 0.5
    assert not _core.pack_columns(s)[1]


# ---- updates -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_increment(dtype):
    rng = np.random.default_rng(9)
    W, inc = rand(rng, (6, 8), dtype), rand(rng, (6, 8), dtype)
    want_inc = inc - dtype(0.01) * W
    want_W = W + want_inc
    _core.apply_increment(W, inc, 0.01)
    np.testing.assert_allclose(inc, want_inc, **TOL[dtype])
    np.testing.assert_allclose(W, want_W, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_bias_update(dtype, momentum):
    rng = np.random.default_rng(10)
    pos, neg = rand(rng, (12, 7), dtype), rand(rng, (9, 7), dtype)
    bias, inc = rand(rng, 7, dtype), rand(rng, 7, dtype)
    g = pos.sum(0).astype(np.float64) - 0.75 * neg.sum(0)
    if momentum:
        want_inc = momentum * inc + 0.1 * g
        want = bias + want_inc
        _core.bias_update(bias, inc, pos, neg, neg_scale=0.75, alpha=0.1, momentum=momentum)
        np.testing.assert_allclose(inc, want_inc, **TOL[dtype])
    else:
        want = bias + 0.1 * g
        _core.bias_update(bias, None, pos, neg, neg_scale=0.75, alpha=0.1)
    np.testing.assert_allclose(bias, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [10, 64, 100, 300])
@pytest.mark.parametrize("mode", ["full", "full+inc", "neg", "neg+inc"])
def test_bit_statistics_update_equals_dense(dtype, rows, mode):
    rng = np.random.default_rng(11)
    V, H = 13, 17
    x, h = (rng.random((rows, V)) < 0.5), (rng.random((rows, H)) < 0.5)
    v, hn = (rng.random((rows, V)) < 0.5), (rng.random((rows, H)) < 0.5)
    pos = x.T.astype(np.float64) @ h
    neg = v.T.astype(np.float64) @ hn
    W, inc = rand(rng, (V, H), dtype), rand(rng, (V, H), dtype)
    W0, inc0 = W.astype(np.float64), inc.astype(np.float64)
    alpha, scale, mom, decay = 0.01, 0.5, 0.9, 1e-3
    words = (rows + 63) // 64
    cols = lambda a: ref.pack_columns(a, words)  # noqa: E731
    use_inc = mode.endswith("+inc")
    full = mode.startswith("full")
    _core.bit_statistics_update(
        W,
        inc if use_inc else None,
        cols(x) if full else None,
        cols(h),
        cols(v),
        cols(hn),
        alpha=alpha,
        neg_scale=scale,
        momentum=mom,
        decay_lr=decay,
    )
    if full and use_inc:
        want_inc = mom * inc0 + alpha * (pos - scale * neg) - decay * W0
        want_W = W0 + want_inc
    elif full:
        want_W = W0 + alpha * (pos - scale * neg) - decay * W0
    elif use_inc:
        want_inc = inc0 - alpha * scale * neg - decay * W0
        want_W = W0 + want_inc
    else:
        want_W = W0 - alpha * scale * neg
    np.testing.assert_allclose(W, want_W, **TOL[dtype])
    if use_inc:
        np.testing.assert_allclose(inc, want_inc, **TOL[dtype])


_ISA_SCRIPT = r"""
import hashlib, sys
import numpy as np
from parrbm import RBM, _core
rng = np.random.default_rng(0)
out = [_core.simd_path()]
for visible, dtype in (("binary", "float32"), ("binary", "float64"), ("gaussian", "float32"), ("gaussian", "float64")):
    X = rng.random((120, 37)) if visible == "binary" else rng.standard_normal((120, 37))
    rbm = RBM(n_hidden=23, visible=visible, dtype=dtype, batch_size=10, n_iter=2, random_state=3, momentum=0.5,
              progress=False).fit(X)
    h = rbm.transform(X)
    out.append(hashlib.sha256(rbm.components_.tobytes() + rbm.intercept_visible_.tobytes() + h.tobytes()).hexdigest())
print(" ".join(out))
"""


def test_the_avx2_and_baseline_paths_give_the_same_bits(tmp_path):
    """The element-wise kernels (sigmoid, sampling, packing, updates) are compiled for AVX2
    and for the baseline ISA; without FMA contraction both do the same IEEE operations, so
    a fit is the same bits on either (float32 and float64, binary and Gaussian)."""
    import os
    import subprocess
    import sys

    def fit(env_extra):
        env = {**os.environ, **env_extra}
        r = subprocess.run(
            [sys.executable, "-c", _ISA_SCRIPT], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
        )
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    default = fit({})
    baseline = fit({"PARRBM_ISA": "baseline"})
    assert baseline[0] == "baseline"
    if default[0] != "avx2":
        pytest.skip("this CPU has no AVX2: both runs took the baseline path")
    assert default[1:] == baseline[1:]


def test_the_cores_type_stub_names_what_the_module_has():
    """parrbm/_core.pyi (pybind11-stubgen's) declares every public name of the built core,
    and nothing it lacks."""
    import ast
    from pathlib import Path

    import parrbm

    stub = ast.parse((Path(parrbm.__file__).parent / "_core.pyi").read_text())
    declared = {n.name for n in stub.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    declared |= {
        t.id
        for n in stub.body
        if isinstance(n, (ast.Assign, ast.AnnAssign))
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        if isinstance(t, ast.Name)
    }
    public = {n for n in dir(_core) if not n.startswith("_")}
    assert public <= declared and declared - {"__all__"} <= public
