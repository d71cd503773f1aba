"""log_softmax, softmax, logsumexp and their vector-Jacobian products."""

import numpy as np
import pytest

import fastce
from conftest import DTYPE_IDS, FLOAT_DTYPES, assert_close, fd_grad, grad_dtype
from reference import ref_log_softmax, ref_log_softmax_vjp, ref_logsumexp, ref_softmax, ref_softmax_vjp

ROW_CASES = {
    "1d": ((6,), -1),
    "2d": ((4, 5), -1),
    "2d_axis0": ((4, 5), 0),
    "3d_axis1": ((2, 5, 3), 1),
    "3d_axis-2": ((2, 5, 3), -2),
    "4d_axis1": ((2, 3, 2, 2), 1),
}
CASE_IDS = list(ROW_CASES)

FWD = {
    "log_softmax": (fastce.log_softmax, ref_log_softmax),
    "softmax": (fastce.softmax, ref_softmax),
}
VJP = {
    "log_softmax_vjp": (fastce.log_softmax, fastce.log_softmax_vjp, ref_log_softmax, ref_log_softmax_vjp),
    "softmax_vjp": (fastce.softmax, fastce.softmax_vjp, ref_softmax, ref_softmax_vjp),
}


def _removed(shape, axis):
    s = list(shape)
    del s[axis]
    return tuple(s)


# --------------------------------------------------------------------------- parity with torch


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("name", list(FWD))
def test_forward_vs_torch(torch, rng, name, case, dtype):
    shape, axis = ROW_CASES[case]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    got = FWD[name][0](x, axis=axis)
    assert isinstance(got, np.ndarray) and got.shape == shape and got.dtype == grad_dtype(dtype)
    want = getattr(torch, name)(torch.from_numpy(x.astype(np.float64)), axis).numpy()
    assert_close(got, want, dtype, kind="grad")  # outputs stored in the input dtype


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASE_IDS)
def test_logsumexp_vs_torch(torch, rng, case, dtype):
    shape, axis = ROW_CASES[case]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    got = np.asarray(fastce.logsumexp(x, axis=axis))
    assert got.shape == _removed(shape, axis)
    assert got.dtype == grad_dtype(dtype)
    want = torch.logsumexp(torch.from_numpy(x.astype(np.float64)), axis).numpy()
    assert_close(got, want, dtype, kind="grad")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("name", list(VJP))
def test_vjp_vs_torch(torch, rng, name, case, dtype):
    shape, axis = ROW_CASES[case]
    _, vjp, ref_fwd, _ = VJP[name]
    x = rng.standard_normal(shape) * 2
    g = rng.standard_normal(shape)
    xt = torch.from_numpy(x).requires_grad_(True)
    y = getattr(torch, name[: -len("_vjp")])(xt, axis)
    y.backward(torch.from_numpy(g))
    out = ref_fwd(x, axis=axis).astype(dtype)  # forward output, independent of fastce
    got = vjp(out, g.astype(dtype), axis=axis)
    assert got.shape == shape and got.dtype == grad_dtype(dtype)
    if dtype == np.float64:
        assert_close(got, xt.grad.numpy(), dtype, kind="grad")
    else:  # inputs rounded to the dtype: compare against the reference on the rounded values
        assert_close(got, VJP[name][3](out, g.astype(dtype), axis=axis), dtype, kind="grad")
        np.testing.assert_allclose(got.astype(np.float64), xt.grad.numpy(), rtol=1e-2, atol=5e-3)


# --------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("name", list(VJP))
def test_vjp_finite_differences(rng, name, case):
    shape, axis = ROW_CASES[case]
    fwd, vjp, _, _ = VJP[name]
    x = rng.standard_normal(shape) * 2
    g = rng.standard_normal(shape)
    want = fd_grad(lambda z: np.sum(g * fwd(z, axis=axis)), x)
    got = vjp(fwd(x, axis=axis), g, axis=axis)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- out=


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(FWD))
def test_forward_out_and_inplace(rng, name, dtype):
    f, ref = FWD[name]
    x = (rng.standard_normal((4, 5)) * 3).astype(dtype)
    want = ref(x)
    buf = np.empty_like(x)
    res = f(x, out=buf)
    assert res is buf
    assert_close(buf, want, dtype, kind="grad")
    xin = x.copy()
    res = f(xin, out=xin)
    assert res is xin
    assert_close(xin, want, dtype, kind="grad")


@pytest.mark.parametrize("name", list(VJP))
def test_vjp_out_and_inplace(rng, name):
    fwd, vjp, ref_fwd, ref_vjp = VJP[name]
    x = rng.standard_normal((3, 6))
    g = rng.standard_normal((3, 6))
    y = ref_fwd(x)
    want = ref_vjp(y, g)
    buf = np.empty_like(x)
    assert vjp(y, g, out=buf) is buf
    assert_close(buf, want)
    g2 = g.copy()
    assert vjp(y, g2, out=g2) is g2  # in place into grad_output
    assert_close(g2, want)
    y2 = y.copy()
    assert vjp(y2, g, out=y2) is y2  # in place into output
    assert_close(y2, want)


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_extreme_rows(dtype):
    x = np.array(
        [
            [1e6, 1e6 + 1, 1e6 + 2, 1e6 + 3],
            [-1e30, -1e30, -1e30, -1e30],
            [1e4, -1e4, 0.0, 1e4],
            [1e-30, 2e-30, -1e-30, 0.0],
            [0.0, -np.inf, 1.0, -np.inf],
        ],
        dtype=dtype,
    )
    assert_close(fastce.log_softmax(x), ref_log_softmax(x), dtype, kind="grad")
    assert_close(fastce.softmax(x), ref_softmax(x), dtype, kind="grad")
    assert_close(fastce.logsumexp(x), ref_logsumexp(x), dtype, kind="grad")
    # the offsets are kept exactly for rows far from zero
    np.testing.assert_allclose(fastce.log_softmax(x)[0], ref_log_softmax([0.0, 1, 2, 3]), rtol=1e-6)
    assert fastce.softmax(x)[4, 1] == 0 and fastce.softmax(x)[4, 3] == 0
    assert np.isneginf(fastce.log_softmax(x)[4, [1, 3]]).all()


def test_all_neg_inf_row_and_nan_row():
    x = np.array([[-np.inf, -np.inf, -np.inf], [np.nan, 0.0, 1.0], [0.0, 1.0, 2.0]])
    ls = fastce.log_softmax(x)
    sm = fastce.softmax(x)
    assert np.isnan(ls[:2]).all() and np.isnan(sm[:2]).all()
    assert np.isnan(fastce.logsumexp(x)[1])
    assert_close(ls[2], ref_log_softmax(x[2]))
    assert_close(sm[2], ref_softmax(x[2]))
    assert_close(fastce.logsumexp(x)[2], ref_logsumexp(x[2]))
    assert fastce.logsumexp(x)[0] == -np.inf


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("C,axis", [(5, -1), (40, -1), (5, 0), (300, 0)],
                         ids=["block", "row", "cols", "cols-long"])
def test_logsumexp_infinite_and_large_logits(C, axis, dtype):
    """torch.logsumexp semantics on every layout: a +inf logit gives +inf (NaN with a NaN in the
    same row), a row of -inf gives -inf, and finite logits far above 43 (where the kernels' exp
    of x - max needs the max subtracted) stay exact.  Reference: the float64 formula below."""
    n = 7
    x = np.linspace(-3.0, 2.0, n * C).reshape(n, C)
    x[0, 1] = np.inf                                    # +inf: +inf
    x[1, 0] = np.inf; x[1, 2] = np.nan                  # +inf and NaN: NaN
    x[2, :] = -np.inf                                   # all masked: -inf
    x[3, :] = 1e4 + np.arange(C)                        # far from 0: exact offsets
    x[4, :] = -np.inf; x[4, C - 1] = np.inf             # -inf and one +inf: +inf
    x[5, :] = np.inf                                    # all +inf: +inf
    x[6, 1] = np.nan                                    # NaN alone: NaN
    want = np.empty(n)
    for i, row in enumerate(x.astype(dtype).astype(np.float64)):
        m = np.max(row[~np.isnan(row)])
        want[i] = (np.nan if np.isnan(row).any() else m if np.isinf(m)
                   else m + np.log(np.sum(np.exp(row - m))))
    xa = np.ascontiguousarray(x.astype(dtype) if axis == -1 else x.T.astype(dtype))
    got = fastce.logsumexp(xa, axis=axis)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok].astype(dtype), rtol=4 * np.finfo(dtype).eps)


def test_masked_vjp(torch):
    x = np.array([[0.5, -np.inf, 1.0, -np.inf]])
    g = np.array([[0.3, 2.0, -1.0, 5.0]])
    for name, (fwd, vjp, ref_fwd, ref_vjp) in VJP.items():
        got = vjp(fwd(x), g)
        assert np.all(np.isfinite(got))
        assert_close(got, ref_vjp(ref_fwd(x), g), kind="grad")
        xt = torch.from_numpy(x).requires_grad_(True)
        getattr(torch, name[: -len("_vjp")])(xt, -1).backward(torch.from_numpy(g))
        assert_close(got, xt.grad.numpy(), kind="grad")
    # softmax outputs are constant 0 at masked entries: zero gradient there;
    # log_softmax = x - lse passes the upstream gradient through unchanged
    assert np.all(fastce.softmax_vjp(fastce.softmax(x), g)[0, [1, 3]] == 0)
    np.testing.assert_array_equal(fastce.log_softmax_vjp(fastce.log_softmax(x), g)[0, [1, 3]], g[0, [1, 3]])


def test_single_class_and_empty():
    x = np.array([[3.0], [-7.0]])
    np.testing.assert_array_equal(fastce.log_softmax(x), 0.0)
    np.testing.assert_array_equal(fastce.softmax(x), 1.0)
    np.testing.assert_allclose(fastce.logsumexp(x), [3.0, -7.0], rtol=1e-15)
    e = np.empty((0, 4))
    assert fastce.log_softmax(e).shape == (0, 4)
    assert fastce.softmax(e).shape == (0, 4)
    assert np.asarray(fastce.logsumexp(e)).shape == (0,)
    assert fastce.log_softmax_vjp(e, e).shape == (0, 4)
    assert fastce.softmax_vjp(e, e).shape == (0, 4)


@pytest.mark.parametrize(
    "x",
    [[[1, 2, 3], [0, 0, 5]], np.array([[1, 2, 3], [0, 0, 5]], dtype=np.int32), np.array([[True, False]])],
    ids=["list", "int32", "bool"],
)
def test_promoted_to_float64(x):
    got = fastce.log_softmax(x)
    assert got.dtype == np.float64
    assert_close(got, ref_log_softmax(np.asarray(x, dtype=np.float64)))
    assert np.asarray(fastce.logsumexp(x)).dtype == np.float64


def test_float16_computed_in_float32():
    # in float16 arithmetic, exp(x - max) summed over 2000 equal entries would be
    # off by far more than float16 output rounding
    x = np.zeros((1, 2000), dtype=np.float16)
    x[0, 0] = 2.0
    got = fastce.log_softmax(x)
    assert got.dtype == np.float16
    want = ref_log_softmax(x.astype(np.float64))
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-3)
    np.testing.assert_allclose(float(fastce.logsumexp(x)[0]), ref_logsumexp(x.astype(np.float64))[0], rtol=1e-3)
