"""ULP accuracy of every elementary function of _simd.h (exp, log, log1p, log1m, tanh; float32 and
float64), over dense sweeps and edge inputs, against a higher-precision reference: float64 NumPy
for the float32 functions, np.longdouble (x87 80-bit on x86-64) for the float64 functions.

The bounds asserted here are the measured maxima (rounded up) stated in _simd.h's header; a
change to a polynomial or a reduction that loses accuracy fails this test.
"""
import numpy as np
import pytest

from fastce import _softmax, _threads

HAVE_LONGDOUBLE = np.finfo(np.longdouble).nmant >= 63

# name -> (max ulp float32, max ulp float64), as stated in _simd.h
BOUNDS = {"exp": (1.0, 1.1), "log": (2.0, 2.0), "log1p": (2.5, 2.5), "tanh": (2.0, 4.5),
          "log1p01": (1.7, 1.7), "expn": (1.0, 1.1), "log1m": (1.7, 2.1)}
# fce_expn's domain (the kernels' exp of a difference from a max, or of -|x|): x <= this, or NaN
EXPN_TOP = {np.float32: 43.0, np.float64: 664.0}


def _ref(name, x, dtype):
    hi = np.float64 if dtype == np.float32 else np.longdouble
    f = {"exp": np.exp, "expn": np.exp, "log": np.log, "log1p": np.log1p, "tanh": np.tanh,
         "log1p01": np.log1p, "log1m": lambda p: np.log1p(-p)}[name]
    with np.errstate(all="ignore"):
        return f(x.astype(hi))


def _ulp_error(got, ref, dtype):
    """|got - ref| in units of the last place of ref rounded to dtype (special values equal)."""
    with np.errstate(over="ignore"):
        ref_r = ref.astype(dtype)
    finite = np.isfinite(ref_r) & np.isfinite(got)
    err = np.zeros(got.shape)
    spacing = np.spacing(np.abs(ref_r[finite])).astype(np.longdouble)
    err[finite] = (np.abs(got[finite].astype(np.longdouble) - ref[finite]) / spacing).astype(float)
    # special values (inf, nan) must match exactly
    special = ~finite
    same = (np.isnan(got) & np.isnan(ref_r)) | (got == ref_r)
    err[special & ~same] = np.inf
    return err


def _inputs(name, dtype, rng):
    fi = np.finfo(dtype)
    if name == "log1p01":
        # its domain: e = exp(-|x|) in [0, 1] -- dense, every binade down to the subnormals, and
        # the values the kernels feed it (exp of a dense grid of -|x| rounded to dtype)
        lo = np.log(fi.smallest_subnormal)
        with np.errstate(all="ignore"):
            x = np.concatenate([np.linspace(0.0, 1.0, 400_001), np.logspace(-45, 0, 100_001),
                                np.exp(np.linspace(lo, 0.0, 200_001).astype(dtype)),
                                [0.0, 1.0, np.nan, fi.tiny, fi.smallest_subnormal,
                                 np.nextafter(dtype(1), dtype(0))]])
            return x[(x <= 1.0) | np.isnan(x)].astype(dtype)
    if name == "log1m":
        # its domain, BCE's probabilities p in [0, 1]: random bit patterns over every binade
        # (subnormals included), uniform, dense around the reduction's switch at 1 - sqrt(1/2)
        # and around 1/2 (where 1 - p stops being exact), and p -> 1 (w = 1 - p tiny)
        bits = np.uint32 if dtype == np.float32 else np.uint64
        one = int(np.array([1.0], dtype).view(bits)[0])
        rnd = rng.integers(0, one, 400_000, dtype=bits, endpoint=True).view(dtype)
        x = np.concatenate([rnd.astype(np.float64), rng.random(200_000),
                            np.linspace(0.28, 0.31, 200_001), np.linspace(0.49, 0.51, 100_001),
                            1.0 - np.logspace(-16, -0.1, 100_001),
                            [0.0, 1.0, np.nan, fi.tiny, fi.smallest_subnormal, fi.eps, 0.5,
                             float(np.nextafter(dtype(1), dtype(0))), 1.0 - np.sqrt(0.5)]])
        with np.errstate(all="ignore"):
            return x.astype(dtype)
    edges = [0.0, -0.0, np.inf, -np.inf, np.nan, fi.tiny, -fi.tiny, fi.smallest_subnormal,
             1.0, -1.0, fi.eps, -fi.eps, 0.5, 2.0, fi.max, -fi.max]
    if name in ("exp", "expn"):
        lo, hi = (-104.0, 89.0) if dtype == np.float32 else (-746.0, 710.0)
        hi = EXPN_TOP[dtype] if name == "expn" else hi
        dense = np.linspace(lo, hi, 400_001)
        extra = [np.log(fi.max), np.log(fi.tiny), np.log(fi.smallest_subnormal), -1e-30, 1e-30]
    elif name == "tanh":
        # float32: the split at |u| = 1.25 and the clamp at 9.1 (tanh rounds to 1 from ~9.011);
        # float64: the series / exp split at 0.1 and the clamp at 20 (rounds to 1 from ~19.06)
        near = [1.25, 9.011, 9.1, 0.1, 19.06, 20.0]
        dense = np.concatenate([np.linspace(-20, 20, 200_001), np.linspace(-0.5, 0.5, 100_001),
                                np.linspace(-2.0, 2.0, 100_001),
                                *[np.linspace(c - 0.05, c + 0.05, 20_001) for c in near],
                                np.logspace(-45, 1.5, 20_001), -np.logspace(-45, 1.5, 20_001)])
        sub = np.array([fi.smallest_subnormal * k for k in (1, 2, 3, 1000)] + [fi.tiny / 2])
        extra = [0.29999, 0.3, 0.30001, 0.0999, 0.1, 0.1001, 1e-30, -1e-30, 9.0, 19.0, 40.0,
                 *near, *[-c for c in near], *sub, *(-sub)]
        # every float32 neighbour of the split and the clamp points
        if dtype == np.float32:
            for c in (1.25, 9.011, 9.1):
                c = np.float32(c)
                nb = [c]
                for _ in range(64):
                    nb.append(np.nextafter(nb[-1], np.float32(0)))
                extra += [float(v) for v in nb] + [float(np.nextafter(c, np.float32(20)))]
    else:
        # positive numbers over every binade (random bit patterns), subnormals included
        bits = np.uint32 if dtype == np.float32 else np.uint64
        top = np.frombuffer(np.array([fi.max], dtype).tobytes(), bits)[0]
        pos = rng.integers(1, int(top), 400_000, dtype=bits, endpoint=True).view(dtype)
        near1 = 1.0 + np.linspace(-0.3, 0.3, 100_001)
        dense = np.concatenate([pos.astype(np.float64), near1])
        if name == "log1p":
            dense = np.concatenate([dense - 1.0, np.linspace(-1, 1, 100_001),
                                    -np.logspace(-30, -0.0001, 20_001),
                                    np.logspace(-30, 30, 20_001)])
            extra = [-1.0, -0.999999, -0.5, 1e-30, -1e-30]
        else:
            extra = [np.nextafter(dtype(1), dtype(2)), np.nextafter(dtype(1), dtype(0)), -1.0]
    x = np.concatenate([np.asarray(dense, np.float64), np.array(edges + extra, np.float64)])
    if name == "expn":
        x = x[~(x > EXPN_TOP[dtype])]
    with np.errstate(all="ignore"):
        return x.astype(dtype)


@pytest.mark.parametrize("variant", ["portable", "fma"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_expn_is_exp_on_its_domain(dtype, variant, rng):
    """fce_expn gives fce_exp's bits on its whole domain: x <= 43 (float32) / 664 (float64), -inf
    and NaN.  Every float32 whose exp is subnormal or underflows (x in [-104, -87.3], where the
    one-factor scaling rounds), random bit patterns over the rest, dense grids, the edges."""
    ev = _threads._simd_eval if variant == "portable" else _softmax._simd_eval_fma
    top = EXPN_TOP[dtype]
    bits = np.uint32 if dtype == np.float32 else np.uint64
    if dtype == np.float32:
        a, b = np.array([-87.0, -104.5], np.float32).view(np.uint32)
        under = np.arange(a, b + 1, dtype=np.uint32).view(np.float32)    # every float in between
    else:
        under = np.linspace(-746.5, -708.0, 2_000_001)
    mz_b, lo_b, hi_b = np.array([-0.0, -746.0, top], dtype).view(bits)
    neg = rng.integers(int(mz_b), int(lo_b), 500_000, dtype=bits).view(dtype)   # [-746, -0]
    pos = rng.integers(0, int(hi_b), 500_000, dtype=bits).view(dtype)           # [0, top]
    fi = np.finfo(dtype)
    edges = np.array([-np.inf, np.nan, 0.0, -0.0, top, -fi.max, fi.smallest_subnormal,
                      -fi.smallest_subnormal, np.log(fi.tiny), np.log(fi.smallest_subnormal)])
    x = np.concatenate([under.astype(dtype), neg, pos, np.linspace(-110, top, 200_001).astype(dtype),
                        edges.astype(dtype)])
    got = ev("expn", x)
    if got is None:
        pytest.skip("no FMA variant in this build / on this CPU")
    ref = ev("exp", x)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(got), nan)        # NaN (of either sign) where exp's is
    np.testing.assert_array_equal(got[~nan].view(bits), ref[~nan].view(bits))


@pytest.mark.parametrize("variant", ["portable", "fma"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(BOUNDS))
def test_simd_function_ulp(name, dtype, variant, rng):
    """Both variants: the portable one (baseline kernels) and the fused multiply-add one (the
    AVX2 / AVX-512 kernels) meet the same bound."""
    if dtype == np.float64 and not HAVE_LONGDOUBLE:
        pytest.skip("needs an extended-precision np.longdouble as the float64 reference")
    x = _inputs(name, dtype, rng)
    if variant == "fma":
        got = _softmax._simd_eval_fma(name, x)
        if got is None:
            pytest.skip("no FMA variant in this build / on this CPU")
    else:
        got = _threads._simd_eval(name, x)
    err = _ulp_error(got, _ref(name, x, dtype), dtype)
    worst = int(np.argmax(err))
    bound = BOUNDS[name][0 if dtype == np.float32 else 1]
    assert err[worst] <= bound, (name, dtype.__name__, x[worst], got[worst], err[worst])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_simd_special_values(dtype):
    ev = _threads._simd_eval
    inf, nan = np.inf, np.nan
    x = np.array([-inf, inf, nan, 0.0], dtype)
    np.testing.assert_array_equal(ev("exp", x)[[0, 1, 3]], [0.0, inf, 1.0])
    assert np.isnan(ev("exp", x)[2])
    lg = ev("log", np.array([0.0, inf, nan, -1.0, 1.0], dtype))
    np.testing.assert_array_equal(lg[[0, 1, 4]], [-inf, inf, 0.0])
    assert np.isnan(lg[2]) and np.isnan(lg[3])
    l1 = ev("log1p", np.array([-1.0, inf, nan, 0.0], dtype))
    np.testing.assert_array_equal(l1[[0, 1, 3]], [-inf, inf, 0.0])
    assert np.isnan(l1[2])
    l1m = ev("log1m", np.array([1.0, 0.0, nan, 1e-30], dtype))
    np.testing.assert_array_equal(l1m[[0, 1, 3]], [-inf, 0.0, dtype(-1e-30)])
    assert np.isnan(l1m[2])
    l01 = ev("log1p01", np.array([0.0, nan, 1.0], dtype))
    assert l01[0] == 0.0 and np.isnan(l01[1]) and abs(l01[2] - np.log(2.0)) <= np.spacing(dtype(1))
    th = ev("tanh", np.array([-inf, inf, nan, 0.0, -0.0], dtype))
    np.testing.assert_array_equal(th[[0, 1, 3]], [-1.0, 1.0, 0.0])
    assert np.isnan(th[2])


@pytest.mark.parametrize("variant", ["portable", "fma"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_tanh_bounded_odd_signed_zero(dtype, variant, rng):
    """|tanh| <= 1 everywhere (also just below the clamp, where the float32 rational form ends),
    exact odd symmetry, tanh(-0) = -0, tiny and subnormal u map to u, +-inf to +-1."""
    fi = np.finfo(dtype)
    ev = _threads._simd_eval if variant == "portable" else _softmax._simd_eval_fma
    bits = np.uint32 if dtype == np.float32 else np.uint64
    top = np.frombuffer(np.array([fi.max], dtype).tobytes(), bits)[0]
    pos = rng.integers(0, int(top), 300_000, dtype=bits, endpoint=True).view(dtype)
    x = np.concatenate([pos, np.linspace(0, 25, 200_001).astype(dtype),
                        np.linspace(8.9, 9.2, 50_001).astype(dtype),
                        np.linspace(18.9, 20.1, 50_001).astype(dtype),
                        np.array([np.inf, fi.max, fi.tiny, fi.smallest_subnormal], dtype)])
    t = ev("tanh", x)
    if t is None:
        pytest.skip("no FMA variant in this build / on this CPU")
    assert np.all(np.abs(t) <= 1.0) and np.all(t >= 0)
    np.testing.assert_array_equal(ev("tanh", -x), -t)
    z = ev("tanh", np.array([-0.0, 0.0], dtype))
    assert z[0] == 0 and np.signbit(z[0]) and not np.signbit(z[1])
    small = np.array([fi.smallest_subnormal, fi.tiny, fi.eps * fi.eps, 1e-30], dtype)
    np.testing.assert_array_equal(ev("tanh", small), small)
    np.testing.assert_array_equal(ev("tanh", -small), -small)
    np.testing.assert_array_equal(ev("tanh", np.array([np.inf, -np.inf], dtype)), [1.0, -1.0])
