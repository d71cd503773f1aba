"""Hostile and odd input (issue 4): a clear exception of the documented type, or the right
answer -- never a crash, never an out-of-bounds access, never a modified input.

Documented error types (decisions.md): target out of range -> IndexError naming the value;
shape mismatch -> ValueError naming both shapes; unknown reduction, label_smoothing outside
[0, 1], weight/pos_weight of the wrong shape, BCE probabilities outside [0, 1] -> ValueError;
complex/object/str dtypes -> TypeError; out= wrong shape -> ValueError, wrong dtype -> TypeError,
read-only or non-C-contiguous -> ValueError.

``FASTCE_BIG_TESTS=1`` enables a > 2**31-element forward pass (needs ~10 GB of RAM).
"""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastce
from fastce import _binary
from conftest import assert_close
from reference import (
    ref_accuracy,
    ref_binary_cross_entropy,
    ref_binary_cross_entropy_with_logits,
    ref_categorical_cross_entropy,
    ref_cross_entropy,
    ref_log_softmax,
    ref_log_softmax_vjp,
    ref_logsumexp,
    ref_nll_loss,
    ref_softmax,
    ref_softmax_vjp,
)

BIG = os.environ.get("FASTCE_BIG_TESTS", "") == "1"
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# =========================================================================== inputs and calls
# Layouts: (logits shape, class axis).  "block" = small C (block kernel), "row" = C > 16,
# "cols" = (N, C, d) with axis=1, "big" has > 32768 elements (threaded kernels).
LAYOUTS = {
    "block": ((150, 5), -1),
    "row": ((9, 40), -1),
    "cols": ((3, 4, 130), 1),
    "nd_last": ((2, 3, 6), -1),
    "big": ((1200, 30), -1),
}


def make_inputs(rng, layout="block", dtype=np.float64):
    """Every array any public function takes, for one layout (class axis `axis`)."""
    shape, axis = LAYOUTS[layout]
    C = shape[axis]
    ps = tuple(np.delete(np.array(shape), axis))
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    t = rng.integers(0, C, size=ps)
    t.reshape(-1)[::7] = -100  # some ignored samples
    z = np.moveaxis(rng.standard_normal(shape), axis, -1)
    q = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    q = np.moveaxis(q, -1, axis).astype(dtype)
    sm = ref_softmax(x, axis=axis).astype(dtype)
    K = shape[-1]
    return dict(
        x=x,
        t=t,
        ti=np.where(t < 0, 0, t),  # no ignore_index (categorical_cross_entropy, accuracy)
        q=q,
        w=rng.uniform(0.5, 2.0, size=C).astype(dtype),
        ls=ref_log_softmax(x, axis=axis).astype(dtype),
        sm=sm,
        g=rng.standard_normal(shape).astype(dtype),
        gn=rng.uniform(0.5, 1.5, size=ps).astype(dtype),
        yb=(rng.random(shape) < 0.4).astype(dtype),
        pb=rng.uniform(0.01, 0.99, size=shape).astype(dtype),
        wb=rng.uniform(0.5, 2.0, size=shape).astype(dtype),
        pw=rng.uniform(0.5, 3.0, size=K).astype(dtype),
        axis=axis,
    )


def calls(d):
    """(name, thunk) for every public function and form, on the inputs `d`."""
    a = d["axis"]
    F = fastce
    ce_kw = dict(weight=d["w"], label_smoothing=0.1, axis=a)
    return [
        ("log_softmax", lambda: F.log_softmax(d["x"], axis=a)),
        ("softmax", lambda: F.softmax(d["x"], axis=a)),
        ("logsumexp", lambda: F.logsumexp(d["x"], axis=a)),
        ("log_softmax_vjp", lambda: F.log_softmax_vjp(d["ls"], d["g"], axis=a)),
        ("softmax_vjp", lambda: F.softmax_vjp(d["sm"], d["g"], axis=a)),
        ("ce", lambda: F.cross_entropy(d["x"], d["t"], **ce_kw)),
        ("ce_rg_none", lambda: F.cross_entropy(d["x"], d["t"], reduction="none", grad_output=d["gn"],
                                               return_grad=True, **ce_kw)),
        ("ce_grad", lambda: F.cross_entropy_grad(d["x"], d["t"], reduction="sum", **ce_kw)),
        ("ce_soft_rg", lambda: F.cross_entropy(d["x"], d["q"], return_grad=True, **ce_kw)),
        ("nll", lambda: F.nll_loss(d["ls"], d["t"], weight=d["w"], axis=a)),
        ("nll_rg", lambda: F.nll_loss(d["ls"], d["t"], weight=d["w"], axis=a, return_grad=True)),
        ("nll_grad", lambda: F.nll_loss_grad(d["ls"], d["t"], reduction="none", grad_output=d["gn"],
                                             axis=a)),
        ("bcel", lambda: F.binary_cross_entropy_with_logits(d["x"], d["yb"], weight=d["wb"],
                                                            pos_weight=d["pw"])),
        ("bcel_rg", lambda: F.binary_cross_entropy_with_logits(
            d["x"], d["yb"], weight=d["wb"], pos_weight=d["pw"], reduction="none", return_grad=True,
            grad_output=d["g"])),
        ("bcel_grad", lambda: F.binary_cross_entropy_with_logits_grad(d["x"], d["yb"],
                                                                      pos_weight=d["pw"])),
        ("bce", lambda: F.binary_cross_entropy(d["pb"], d["yb"], weight=d["wb"], reduction="sum")),
        ("bce_rg", lambda: F.binary_cross_entropy(d["pb"], d["yb"], weight=d["wb"],
                                                  return_grad=True)),
        ("bce_grad", lambda: F.binary_cross_entropy_grad(d["pb"], d["yb"], reduction="none",
                                                         grad_output=d["g"])),
        ("cat_ce", lambda: F.categorical_cross_entropy(d["sm"], d["ti"], axis=a)),
        ("cat_ce_soft", lambda: F.categorical_cross_entropy(d["sm"], d["q"], reduction="none", axis=a)),
        ("accuracy", lambda: F.accuracy(d["x"], d["ti"], axis=a)),
    ]


CALL_NAMES = [n for n, _ in calls(make_inputs(np.random.default_rng(0)))]


def expected(name, d):
    """The reference value of a call's loss / row-op output (gradients are not in the reference)."""
    a = d["axis"]
    f64 = {k: (np.asarray(v, dtype=np.float64) if k not in ("t", "ti", "axis") else v)
           for k, v in d.items()}
    ce_kw = dict(weight=f64["w"], label_smoothing=0.1, axis=a)
    return {
        "log_softmax": lambda: ref_log_softmax(f64["x"], axis=a),
        "softmax": lambda: ref_softmax(f64["x"], axis=a),
        "logsumexp": lambda: ref_logsumexp(f64["x"], axis=a),
        "log_softmax_vjp": lambda: ref_log_softmax_vjp(f64["ls"], f64["g"], axis=a),
        "softmax_vjp": lambda: ref_softmax_vjp(f64["sm"], f64["g"], axis=a),
        "ce": lambda: ref_cross_entropy(f64["x"], d["t"], **ce_kw),
        "ce_rg_none": lambda: ref_cross_entropy(f64["x"], d["t"], reduction="none", **ce_kw),
        "ce_soft_rg": lambda: ref_cross_entropy(f64["x"], f64["q"], **ce_kw),
        "nll": lambda: ref_nll_loss(f64["ls"], d["t"], weight=f64["w"], axis=a),
        "nll_rg": lambda: ref_nll_loss(f64["ls"], d["t"], weight=f64["w"], axis=a),
        "bcel": lambda: ref_binary_cross_entropy_with_logits(f64["x"], f64["yb"], weight=f64["wb"],
                                                             pos_weight=f64["pw"]),
        "bcel_rg": lambda: ref_binary_cross_entropy_with_logits(
            f64["x"], f64["yb"], weight=f64["wb"], pos_weight=f64["pw"], reduction="none"),
        "bce": lambda: ref_binary_cross_entropy(f64["pb"], f64["yb"], weight=f64["wb"], reduction="sum"),
        "bce_rg": lambda: ref_binary_cross_entropy(f64["pb"], f64["yb"], weight=f64["wb"]),
        "cat_ce": lambda: ref_categorical_cross_entropy(d["sm"], d["ti"], axis=a),
        "cat_ce_soft": lambda: ref_categorical_cross_entropy(d["sm"], f64["q"], reduction="none", axis=a),
        "accuracy": lambda: ref_accuracy(f64["x"], d["ti"], axis=a),
    }.get(name, lambda: None)()


def _first(r):
    return r[0] if isinstance(r, tuple) else r


def assert_same_result(got, want, rtol=1e-13, err_msg=""):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want), err_msg
        for u, v in zip(got, want):
            assert_same_result(u, v, rtol, err_msg)
        return
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.shape == want.shape and got.dtype == want.dtype, (
            err_msg, type(got), getattr(got, "shape", None), want.shape)
    else:
        assert type(got) is type(want), (err_msg, type(got), type(want))
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64),
                               rtol=rtol, atol=1e-300, equal_nan=True, err_msg=err_msg)


# =========================================================================== targets


BAD_TARGETS = [
    ("C", lambda C: C, np.int64),
    ("C+1", lambda C: C + 1, np.int64),
    ("-1", lambda C: -1, np.int64),
    ("-2", lambda C: -2, np.int64),
    ("-101", lambda C: -101, np.int64),
    ("2**31", lambda C: 2**31, np.int64),
    ("2**32+1", lambda C: 2**32 + 1, np.int64),  # wraps to 1 in 32-bit arithmetic
    ("2**40", lambda C: 2**40, np.int64),
    ("int64min", lambda C: -(2**63), np.int64),
    ("2**63-100", lambda C: 2**63 - 100, np.int64),
    ("u64max", lambda C: 2**64 - 1, np.uint64),
    ("u64_-100", lambda C: 2**64 - 100, np.uint64),  # == ignore_index -100 modulo 2**64
    ("u64_2**63", lambda C: 2**63, np.uint64),
    ("u32max", lambda C: 2**32 - 1, np.uint32),
    ("i8_-1", lambda C: -1, np.int8),
    ("u8_255", lambda C: 255, np.uint8),
    ("i32_-2**31", lambda C: -(2**31), np.int32),
]


def _class_target_calls(x, t, axis):
    F = fastce
    return {
        "cross_entropy": lambda: F.cross_entropy(x, t, axis=axis),
        "cross_entropy_rg": lambda: F.cross_entropy(x, t, axis=axis, return_grad=True, reduction="none"),
        "cross_entropy_grad": lambda: F.cross_entropy_grad(x, t, axis=axis, label_smoothing=0.2),
        "nll_loss": lambda: F.nll_loss(x, t, axis=axis, reduction="sum"),
        "nll_loss_grad": lambda: F.nll_loss_grad(x, t, axis=axis, weight=np.ones(x.shape[axis])),
        "categorical": lambda: F.categorical_cross_entropy(np.abs(x) / (1 + np.abs(x)), t, axis=axis),
        "accuracy": lambda: F.accuracy(x, t, axis=axis),
    }


@pytest.mark.parametrize("bad", BAD_TARGETS, ids=[b[0] for b in BAD_TARGETS])
@pytest.mark.parametrize("layout", ["block", "row", "cols", "1d"])
def test_target_out_of_range(rng, layout, bad):
    _, make_value, tdtype = bad
    if layout == "1d":
        shape, axis = (6,), -1
    else:
        shape, axis = LAYOUTS[layout]
    C = shape[axis]
    value = make_value(C)
    x = rng.standard_normal(shape)
    ps = tuple(np.delete(np.array(shape), axis))
    t = np.asarray(rng.integers(0, C, size=ps)).astype(tdtype)
    if t.ndim == 0:
        t = np.array(value, dtype=tdtype)
    else:
        t.reshape(-1)[-1] = np.array(value).astype(tdtype)  # the last sample: after all others
    for name, call in _class_target_calls(x, t, axis).items():
        with pytest.raises(IndexError) as ei:
            call()
        assert str(int(np.array(value).astype(tdtype))) in str(ei.value), (name, str(ei.value))


@pytest.mark.parametrize("ignore_index", [0, 3, -1, 2**40, -(2**63)])
def test_target_other_ignore_index(rng, ignore_index):
    """Targets equal to a custom ignore_index are skipped; -100 then is out of range."""
    x = rng.standard_normal((50, 4))
    t = rng.integers(0, 4, size=50)
    t[::3] = ignore_index
    got = fastce.cross_entropy(x, t, ignore_index=ignore_index, reduction="sum")
    assert_close(got, ref_cross_entropy(x, t, ignore_index=ignore_index, reduction="sum"))
    g = fastce.cross_entropy_grad(x, t, ignore_index=ignore_index)
    assert np.all(g[t == ignore_index] == 0)
    t2 = t.copy()
    t2[1] = -100
    if ignore_index != -100 and (t2[1] != ignore_index):
        with pytest.raises(IndexError, match="-100"):
            fastce.cross_entropy(x, t2, ignore_index=ignore_index)


@pytest.mark.parametrize("bad", [1.5, "a", None, [1], 2**70, -(2**70)], ids=str)
def test_bad_ignore_index(bad):
    x = np.zeros((3, 4))
    t = np.array([0, 1, 2])
    exc = ValueError if isinstance(bad, int) else TypeError
    with pytest.raises(exc, match="ignore_index"):
        fastce.cross_entropy(x, t, ignore_index=bad)


@pytest.mark.parametrize("tdtype", [np.float32, np.float64, np.float16, bool, complex, object, "U1"])
def test_non_integer_index_targets(tdtype):
    """A target of the per-sample shape needs an integer dtype: TypeError that says so."""
    x = np.zeros((3, 4))
    t = np.array([0, 1, 1]).astype(tdtype)
    F = fastce
    for call in (lambda: F.cross_entropy(x, t), lambda: F.cross_entropy_grad(x, t),
                 lambda: F.nll_loss(x, t), lambda: F.nll_loss_grad(x, t),
                 lambda: F.categorical_cross_entropy(np.full((3, 4), 0.25), t),
                 lambda: F.accuracy(x, t)):
        with pytest.raises(TypeError, match="integer|dtype"):
            call()


@pytest.mark.parametrize("x_shape,axis,t_shape", [
    ((3, 4), -1, (4,)), ((3, 4), -1, (3, 1)), ((3, 4), -1, (4, 3)), ((3, 4), -1, ()),
    ((2, 4, 5), 1, (2, 4)), ((2, 4, 5), 1, (2, 5, 4)), ((2, 4, 5), -1, (2, 5)), ((4,), -1, (1,)),
])
@pytest.mark.parametrize("tdtype", [np.int64, np.float64])
def test_target_shape_mismatch_names_both_shapes(x_shape, axis, t_shape, tdtype):
    x = np.zeros(x_shape)
    t = np.zeros(t_shape, dtype=tdtype)
    F = fastce
    for call in (lambda: F.cross_entropy(x, t, axis=axis), lambda: F.nll_loss_grad(x, t, axis=axis),
                 lambda: F.cross_entropy(x, t, axis=axis, return_grad=True)):
        with pytest.raises(ValueError) as ei:
            call()
        msg = str(ei.value)
        assert str(tuple(x_shape)) in msg and str(tuple(t_shape)) in msg, msg


@pytest.mark.parametrize("name", ["bcel", "bce"])
@pytest.mark.parametrize("y_shape", [(3,), (4, 3), (3, 4, 1), (1, 4), ()])
def test_binary_target_shape_mismatch(name, y_shape):
    x = np.full((3, 4), 0.5)
    y = np.zeros(y_shape)
    fns = ((fastce.binary_cross_entropy_with_logits, fastce.binary_cross_entropy_with_logits_grad)
           if name == "bcel" else (fastce.binary_cross_entropy, fastce.binary_cross_entropy_grad))
    for fn in fns:
        with pytest.raises(ValueError) as ei:
            fn(x, y)
        assert str((3, 4)) in str(ei.value) and str(tuple(y_shape)) in str(ei.value)


# =========================================================================== options


@pytest.mark.parametrize("w_shape", [(5,), (3,), (1, 4), (4, 1), (), (2, 4), (0,)], ids=str)
def test_class_weight_wrong_shape(w_shape):
    x = np.zeros((3, 4))
    t = np.array([0, 1, 3])
    w = np.ones(w_shape)
    F = fastce
    for call in (lambda: F.cross_entropy(x, t, weight=w), lambda: F.cross_entropy_grad(x, t, weight=w),
                 lambda: F.nll_loss(x, t, weight=w), lambda: F.nll_loss_grad(x, t, weight=w),
                 lambda: F.cross_entropy(x, np.full((3, 4), 0.25), weight=w, return_grad=True)):
        with pytest.raises(ValueError, match="weight"):
            call()


@pytest.mark.parametrize("w_shape", [(3,), (2, 4), (4, 3), (3, 4, 2), (2, 3, 4)], ids=str)
def test_binary_weight_not_broadcastable(w_shape):
    x = np.full((3, 4), 0.5)
    for fn in (fastce.binary_cross_entropy_with_logits, fastce.binary_cross_entropy_with_logits_grad,
               fastce.binary_cross_entropy, fastce.binary_cross_entropy_grad):
        with pytest.raises(ValueError, match="weight"):
            fn(x, x, weight=np.ones(w_shape))


@pytest.mark.parametrize("pw_shape", [(3,), (5,), (0,), (2, 4), (3, 1), (1, 1, 4), (4, 1)], ids=str)
def test_pos_weight_wrong_shape(pw_shape):
    x = np.full((3, 4), 0.5)
    for call in (lambda: fastce.binary_cross_entropy_with_logits(x, x, pos_weight=np.ones(pw_shape)),
                 lambda: fastce.binary_cross_entropy_with_logits_grad(x, x, pos_weight=np.ones(pw_shape))):
        with pytest.raises(ValueError, match="pos_weight"):
            call()


def test_pos_weight_valid_broadcasts():
    x = np.linspace(-2, 2, 12).reshape(3, 4)
    y = (x > 0).astype(float)
    want = ref_binary_cross_entropy_with_logits(x, y, pos_weight=np.full(4, 2.0))
    for pw in (2.0, np.array(2.0), np.full(1, 2.0), np.full((1, 4), 2.0), np.full(4, 2, dtype=np.int8)):
        assert_close(fastce.binary_cross_entropy_with_logits(x, y, pos_weight=pw), want)


BAD_REDUCTIONS = ["avg", "MEAN", "", "mean ", None, 0, 1.0, "elementwise_mean", b"mean"]


def _loss_calls_with(**kw):
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    t = np.array([0, 1, 3])
    p = np.full((3, 4), 0.5)
    F = fastce
    return [
        lambda: F.cross_entropy(x, t, **kw),
        lambda: F.cross_entropy(x, t, return_grad=True, **kw),
        lambda: F.cross_entropy_grad(x, t, **kw),
        lambda: F.cross_entropy(x, p, **kw),
        lambda: F.nll_loss(x, t, **kw),
        lambda: F.nll_loss_grad(x, t, **kw),
        lambda: F.binary_cross_entropy_with_logits(x, p, **kw),
        lambda: F.binary_cross_entropy_with_logits_grad(x, p, **kw),
        lambda: F.binary_cross_entropy(p, p, return_grad=True, **kw),
        lambda: F.binary_cross_entropy_grad(p, p, **kw),
        lambda: F.categorical_cross_entropy(p, t, **kw),
    ]


@pytest.mark.parametrize("bad", BAD_REDUCTIONS, ids=repr)
def test_unknown_reduction(bad):
    for call in _loss_calls_with(reduction=bad):
        with pytest.raises(ValueError, match="reduction"):
            call()


@pytest.mark.parametrize("bad", [-0.1, -1e-300, 1.0000001, 2, float("nan"), float("inf"), -float("inf")],
                         ids=repr)
def test_label_smoothing_out_of_range(bad):
    x = np.zeros((3, 4))
    F = fastce
    for t in (np.array([0, 1, 2]), np.full((3, 4), 0.25)):
        for call in (lambda: F.cross_entropy(x, t, label_smoothing=bad),
                     lambda: F.cross_entropy(x, t, label_smoothing=bad, return_grad=True),
                     lambda: F.cross_entropy_grad(x, t, label_smoothing=bad)):
            with pytest.raises(ValueError, match="label_smoothing"):
                call()


@pytest.mark.parametrize("bad", [None, "abc", 0.1j, [0.1], object()], ids=repr)
def test_label_smoothing_not_a_number(bad):
    with pytest.raises((TypeError, ValueError), match="label_smoothing"):
        fastce.cross_entropy(np.zeros((3, 4)), np.array([0, 1, 2]), label_smoothing=bad)


@pytest.mark.parametrize("bad", [2, -3, 5, 1.0, "1", None])
def test_bad_axis(bad):
    x = np.zeros((3, 4))
    exc = ValueError if isinstance(bad, int) else TypeError
    F = fastce
    for call in (lambda: F.log_softmax(x, axis=bad), lambda: F.logsumexp(x, axis=bad),
                 lambda: F.cross_entropy(x, np.zeros((3, 4)), axis=bad),
                 lambda: F.categorical_cross_entropy(np.full((3, 4), .25), np.zeros((3, 4)), axis=bad),
                 lambda: F.accuracy(x, np.zeros((3, 4)), axis=bad)):
        with pytest.raises(exc, match="axis"):
            call()


@pytest.mark.parametrize("bad", [-0.1, 0.5, 1.0, float("nan")], ids=repr)
def test_categorical_bad_eps(bad):
    with pytest.raises(ValueError, match="eps"):
        fastce.categorical_cross_entropy(np.full((2, 3), 1 / 3), np.array([0, 1]), eps=bad)


def test_grad_output_hostile():
    x = np.zeros((3, 4))
    t = np.array([0, 1, 2])
    F = fastce
    with pytest.raises(ValueError, match=re.escape("(3,)")):
        F.cross_entropy_grad(x, t, grad_output=np.ones(3))  # mean needs a scalar
    with pytest.raises(ValueError, match="grad_output"):
        F.cross_entropy_grad(x, t, reduction="none", grad_output=np.ones(4))
    with pytest.raises(ValueError, match="grad_output"):
        F.binary_cross_entropy_with_logits_grad(x, x, reduction="none", grad_output=np.ones((4, 3)))
    for bad in ("1", 1j, np.array([1j]), np.array(["a"]), None):
        with pytest.raises(TypeError, match="grad_output"):
            F.cross_entropy_grad(x, t, reduction="sum" if np.ndim(bad) == 0 else "none", grad_output=bad)


# =========================================================================== dtypes


BAD_DTYPE_ARRAYS = {
    "complex": lambda s: np.zeros(s, dtype=complex),
    "complex64": lambda s: np.zeros(s, dtype=np.complex64),
    "object": lambda s: np.zeros(s).astype(object),
    "str": lambda s: np.full(s, "0.5"),
    "bytes": lambda s: np.full(s, b"0.5"),
    "datetime": lambda s: np.zeros(s, dtype="M8[s]"),
    "timedelta": lambda s: np.zeros(s, dtype="m8[s]"),
    "void": lambda s: np.zeros(s, dtype="V8"),
    "record": lambda s: np.zeros(s, dtype=[("a", "f8")]),
}


@pytest.mark.parametrize("kind", list(BAD_DTYPE_ARRAYS))
@pytest.mark.parametrize("name", CALL_NAMES)
def test_bad_dtype_main_input(rng, name, kind):
    """Every public function rejects complex/object/str/... as its main input with TypeError."""
    d = make_inputs(rng, "block")
    bad = BAD_DTYPE_ARRAYS[kind]
    main = {"log_softmax_vjp": "ls", "softmax_vjp": "sm", "nll": "ls", "nll_rg": "ls", "nll_grad": "ls",
            "bce": "pb", "bce_rg": "pb", "bce_grad": "pb", "cat_ce": "sm", "cat_ce_soft": "sm"}.get(name, "x")
    d[main] = bad(d[main].shape)
    call = dict(calls(d))[name]
    with pytest.raises(TypeError, match="dtype"):
        call()


@pytest.mark.parametrize("kind", ["complex", "object", "str", "datetime"])
@pytest.mark.parametrize("which", ["g", "yb", "q", "w", "wb", "pw", "gn"])
def test_bad_dtype_secondary_inputs(rng, which, kind):
    d = make_inputs(rng, "block")
    d[which] = BAD_DTYPE_ARRAYS[kind](d[which].shape)
    users = {"g": ["log_softmax_vjp", "softmax_vjp", "bcel_rg", "bce_grad"], "yb": ["bcel", "bce_rg"],
             "q": ["ce_soft_rg", "cat_ce_soft"], "w": ["ce", "nll"], "wb": ["bcel", "bce"],
             "pw": ["bcel_grad"], "gn": ["ce_rg_none", "nll_grad"]}[which]
    table = dict(calls(d))
    for name in users:
        with pytest.raises(TypeError, match="dtype"):
            table[name]()


@pytest.mark.parametrize("bad", [[[1, 2], [3]], [[1.0, "a"]], [1.0, None]], ids=["ragged", "str", "None"])
def test_ragged_or_mixed_lists(bad):
    with pytest.raises((ValueError, TypeError)):
        fastce.log_softmax(bad)
    with pytest.raises((ValueError, TypeError)):
        fastce.binary_cross_entropy_with_logits(bad, bad)


def test_zero_dim_input():
    for call in (lambda: fastce.log_softmax(3.0), lambda: fastce.logsumexp(np.float32(1)),
                 lambda: fastce.cross_entropy(2.0, 0), lambda: fastce.accuracy(1.0, 0)):
        with pytest.raises(ValueError, match=re.escape("()")):
            call()


# =========================================================================== BCE probabilities


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("bad", [-1e-12, -1e-300, 1 + 1e-12, 1.5, 2.0, -np.inf, np.inf, -1.0], ids=repr)
def test_bce_probabilities_outside_unit_interval(dtype, bad):
    p = np.full(70_000, 0.5, dtype=dtype)  # also the threaded path
    v = dtype(bad)
    if 0 <= v <= 1:
        pytest.skip("rounds into [0, 1] in this dtype")
    p[-1] = v
    y = np.zeros_like(p)
    F = fastce
    for call in (lambda: F.binary_cross_entropy(p, y), lambda: F.binary_cross_entropy(p, y, return_grad=True),
                 lambda: F.binary_cross_entropy_grad(p, y, reduction="none")):
        with pytest.raises(ValueError, match=re.escape("[0, 1]")):
            call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 4095, 4097, 200_001])
def test_probability_scan_names_the_first_offender(dtype, n):
    """The C scan behind the [0, 1] check (blocks of 4096, two threads over halves): the value
    named is the first one outside in memory order, and NaN before it does not hide it."""
    rng = np.random.default_rng(n)
    y = np.zeros(n, dtype)
    for pos in sorted({0, n // 2 - 1, n // 2, n // 2 + 1, 4095, 4096, n - 1} & set(range(n))):
        p = rng.random(n).astype(dtype)
        p[:pos] = np.where(rng.random(pos) < 0.01, np.nan, p[:pos])
        p[pos] = dtype(-0.25)
        if pos + 1 < n:
            p[pos + 1:] = np.where(rng.random(n - pos - 1) < 0.5, dtype(1.75), p[pos + 1:])
        with pytest.raises(ValueError, match=re.escape(repr(dtype(-0.25)))):
            fastce.binary_cross_entropy(p, y)
        # the scan itself, with two threads whatever this machine's OpenMP setting
        assert _binary.first_outside_unit(p, 2) == pos
        assert _binary.first_outside_unit(p, 1) == pos
    p = np.full(n, 0.5, dtype)
    p[::3] = np.nan
    p[-1] = dtype(-0.0)
    assert np.isnan(fastce.binary_cross_entropy(p, y, reduction="sum")) == (n > 1)


@pytest.mark.parametrize("n", [70_000, 200_001])
def test_probability_scan_second_half(n):
    """Offenders only in the second thread's half (at its start, at a block boundary inside it,
    at the end) are found at their flat index."""
    h = n // 2
    for pos in (h, h + 4095, h + 4096, n - 1):
        p = np.full(n, 0.5)
        p[pos] = 2.0
        p[pos + 1:] = -1.0
        assert _binary.first_outside_unit(p, 2) == pos
    assert _binary.first_outside_unit(np.full(n, 0.5), 2) == -1


@pytest.mark.parametrize("make", [
    lambda p: np.repeat(p, 2)[::2],                                  # strided
    lambda p: p.astype(np.float16),                                  # not a kernel dtype
    lambda p: p.astype(p.dtype.newbyteorder()),                      # byte-swapped
    lambda p: p[:1].reshape(()),                                     # 0-d
], ids=["strided", "float16", "byteswapped", "0d"])
def test_unit_interval_fallback_names_the_same_value(make):
    """_validate.unit_interval on every kind of array: the C scan takes the kernel arrays (the
    0-d one here), NumPy the rest; the value named is the same."""
    from fastce import _validate
    p = np.full(9, 0.5)
    p[0] = 1.5
    p[4] = -1.0
    a = make(p)
    with pytest.raises(ValueError, match=r"found np\.float(16|64)\(1\.5\)"):
        _validate.unit_interval(a, "input", "test")
    _validate.unit_interval(make(np.array([0.0, 1.0, np.nan, -0.0, 0.5, 0.5, 0.5, 0.5, 0.5])),
                            "input", "test")


def test_bce_probability_edges_are_valid():
    p = np.array([0.0, -0.0, 1.0, 0.0, 1.0, np.nan])
    y = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    loss, grad = fastce.binary_cross_entropy(p, y, reduction="none", return_grad=True)
    want = ref_binary_cross_entropy(p, y, reduction="none")
    np.testing.assert_array_equal(loss, want)  # 0, 0, 0, 100, 100, nan
    assert np.all(np.isfinite(grad[:5])) and np.isnan(grad[5])


# =========================================================================== out=


def _out_calls(d, out):
    """(name, thunk, expected out shape, dtype) for every function with an out= argument."""
    a = d["axis"]
    F = fastce
    shp, dt = d["x"].shape, d["x"].dtype
    return [
        ("log_softmax", lambda: F.log_softmax(d["x"], axis=a, out=out)),
        ("softmax", lambda: F.softmax(d["x"], axis=a, out=out)),
        ("log_softmax_vjp", lambda: F.log_softmax_vjp(d["ls"], d["g"], axis=a, out=out)),
        ("softmax_vjp", lambda: F.softmax_vjp(d["sm"], d["g"], axis=a, out=out)),
        ("ce_rg", lambda: F.cross_entropy(d["x"], d["t"], axis=a, return_grad=True, out=out)),
        ("ce_grad", lambda: F.cross_entropy_grad(d["x"], d["q"], axis=a, out=out)),
        ("nll_rg", lambda: F.nll_loss(d["ls"], d["t"], axis=a, return_grad=True, out=out)),
        ("nll_grad", lambda: F.nll_loss_grad(d["ls"], d["t"], axis=a, out=out)),
        ("bcel_rg", lambda: F.binary_cross_entropy_with_logits(d["x"], d["yb"], return_grad=True, out=out)),
        ("bcel_grad", lambda: F.binary_cross_entropy_with_logits_grad(d["x"], d["yb"], out=out)),
        ("bce_rg", lambda: F.binary_cross_entropy(d["pb"], d["yb"], return_grad=True, out=out)),
        ("bce_grad", lambda: F.binary_cross_entropy_grad(d["pb"], d["yb"], out=out)),
    ], shp, dt


OUT_NAMES = [n for n, _ in _out_calls(make_inputs(np.random.default_rng(0)), None)[0]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", OUT_NAMES)
def test_out_rejections(rng, name, dtype):
    d = make_inputs(rng, "block", dtype)
    shp = d["x"].shape
    other = np.float32 if dtype == np.float64 else np.float64
    ro = np.zeros(shp, dtype)
    ro.setflags(write=False)
    big = np.zeros((shp[0], 2 * shp[1]), dtype)
    cases = [
        (np.zeros((shp[0], shp[1] + 1), dtype), ValueError, str((shp[0], shp[1] + 1))),
        (np.zeros(shp[::-1], dtype), ValueError, "shape"),
        (np.zeros(shp[0] * shp[1], dtype), ValueError, "shape"),
        (np.zeros((1,) + shp, dtype), ValueError, "shape"),
        (np.zeros(shp, other), TypeError, "dtype"),
        (np.zeros(shp, np.float16), TypeError, "dtype"),
        (np.zeros(shp, np.complex128), TypeError, "dtype"),
        (np.zeros(shp, np.int64), TypeError, "dtype"),
        (ro, ValueError, "read-only"),
        (big[:, ::2], ValueError, "contiguous"),
        (np.asfortranarray(np.zeros(shp, dtype)), ValueError, "contiguous"),
        (np.zeros(shp, dtype).tolist(), TypeError, "NumPy array|ndarray"),
        (np.zeros(shp, np.dtype(dtype).newbyteorder()), TypeError, "dtype"),
    ]
    for out, exc, pattern in cases:
        table = dict(_out_calls(d, out)[0])
        before = np.array(out, copy=True) if isinstance(out, np.ndarray) else None
        with pytest.raises(exc, match=pattern):
            table[name]()
        if before is not None:
            np.testing.assert_array_equal(out, before)


@pytest.mark.parametrize("name", ["ce", "nll", "bcel", "bce"])
def test_out_without_return_grad_is_error(rng, name):
    d = make_inputs(rng, "block")
    fn = {"ce": fastce.cross_entropy, "nll": fastce.nll_loss, "bcel": fastce.binary_cross_entropy_with_logits,
          "bce": fastce.binary_cross_entropy}[name]
    a, b = {"ce": ("x", "t"), "nll": ("ls", "t"), "bcel": ("x", "yb"), "bce": ("pb", "yb")}[name]
    with pytest.raises(ValueError, match="return_grad"):
        fn(d[a], d[b], out=np.empty_like(d[a]))


@pytest.mark.parametrize("layout", ["block", "row", "cols", "big"])
@pytest.mark.parametrize("name", OUT_NAMES)
def test_out_is_the_input(rng, layout, name):
    """out= the (first) input itself: an in-place result equal to the out-of-place one."""
    d = make_inputs(rng, layout)
    want_calls, _, _ = _out_calls(d, None)
    want = dict(want_calls)[name]()
    first = {"log_softmax_vjp": "ls", "softmax_vjp": "sm", "nll_rg": "ls", "nll_grad": "ls",
             "bce_rg": "pb", "bce_grad": "pb"}.get(name, "x")
    buf = d[first].copy()
    d[first] = buf
    got = dict(_out_calls(d, buf)[0])[name]()
    assert _first(got) is not None
    g = got[1] if isinstance(got, tuple) else got
    assert g is buf
    assert_same_result(got, want, rtol=1e-13, err_msg=name)


@pytest.mark.parametrize("layout", ["block", "row", "cols"])
@pytest.mark.parametrize("name", OUT_NAMES)
def test_out_partially_overlapping_input(rng, layout, name):
    """out= shares memory with an input at an offset: must still give the right answer."""
    d = make_inputs(rng, layout)
    want = dict(_out_calls(d, None)[0])[name]()
    shp = d["x"].shape
    first = {"log_softmax_vjp": "ls", "softmax_vjp": "sm", "nll_rg": "ls", "nll_grad": "ls",
             "bce_rg": "pb", "bce_grad": "pb"}.get(name, "x")
    n = d[first].size
    buf = np.empty(n + 3)
    buf[3:] = d[first].reshape(-1)
    d[first] = buf[3:].reshape(shp)
    out = buf[:n].reshape(shp)
    got = dict(_out_calls(d, out)[0])[name]()
    assert_same_result(got, want, rtol=1e-13, err_msg=name)


# --------------------------------------------------------------------------- out aliasing others

ALIAS_SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
import fastce
from reference import ref_cross_entropy, ref_nll_loss
N, C = {N}, {C}
rng = np.random.default_rng(0)
x = rng.standard_normal((N, C))
buf = np.zeros(N * C)
out = buf.reshape(N, C)
t = buf[:N].view(np.int64)           # the target lives in the gradient buffer
t[:] = rng.integers(0, C, size=N)
t_copy = t.copy()
want = {ref}(x, t_copy, reduction="sum")
try:
    loss = fastce.{fn}(x, t, reduction="sum", return_grad=True, out=out)[0]
except (ValueError, TypeError) as e:
    print("REFUSED", e)
else:
    print("LOSS", repr(float(loss)), repr(float(want)))
"""


@pytest.mark.parametrize("fn,ref", [("cross_entropy", "ref_cross_entropy"), ("nll_loss", "ref_nll_loss")])
@pytest.mark.parametrize("N,C", [(300, 5), (2000, 40), (40, 3)])
def test_out_aliasing_target_never_crashes(fn, ref, N, C):
    """The class-index target shares memory with out= (int64 view of the float64 buffer).

    The kernels trust validated indices; writing the gradient overwrites them.  fastce must
    copy the target first or refuse -- never read out of bounds.  (Run in a subprocess: a
    failure here is a segfault.)
    """
    code = ALIAS_SCRIPT.format(tests=TESTS_DIR, N=N, C=C, fn=fn, ref=ref)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"crashed with return code {r.returncode}: {r.stderr[-2000:]}"
    line = r.stdout.strip().splitlines()[-1]
    if line.startswith("LOSS"):
        got, want = map(float, line.split()[1:])
        assert got == pytest.approx(want, rel=1e-12), line


@pytest.mark.parametrize("which", ["weight", "grad_output", "pos_weight", "bce_weight"])
def test_out_aliasing_options_gives_right_answer(rng, which):
    """weight / grad_output / pos_weight share memory with out=: right answer or a clean error."""
    N, C = 300, 5
    x = rng.standard_normal((N, C))
    t = rng.integers(0, C, size=N)
    y = rng.random((N, C))
    buf = np.zeros(N * C)
    out = buf.reshape(N, C)
    if which == "weight":
        opt = buf[:C]
        opt[:] = rng.uniform(0.5, 2, C)
        call = lambda o, v: fastce.cross_entropy(x, t, weight=v, reduction="sum", return_grad=True, out=o)
    elif which == "grad_output":
        opt = buf[:N]
        opt[:] = rng.uniform(0.5, 2, N)
        call = lambda o, v: fastce.cross_entropy(x, t, grad_output=v, reduction="none", return_grad=True, out=o)
    elif which == "pos_weight":
        opt = buf[:C]
        opt[:] = rng.uniform(0.5, 2, C)
        call = lambda o, v: fastce.binary_cross_entropy_with_logits(x, y, pos_weight=v, reduction="sum",
                                                                    return_grad=True, out=o)
    else:
        opt = out
        opt[:] = rng.uniform(0.5, 2, (N, C))
        call = lambda o, v: fastce.binary_cross_entropy_with_logits(x, y, weight=v, reduction="sum",
                                                                    return_grad=True, out=o)
    want = call(None, opt.copy())
    try:
        got = call(out, opt)
    except (ValueError, TypeError):
        return
    assert_same_result(got, want, rtol=1e-13, err_msg=f"out= aliasing {which}")


# =========================================================================== valid oddities


EMPTY_LAYOUTS = [((0, 4), -1), ((0, 4, 3), 1), ((2, 4, 0), 1), ((0, 2, 4), -1), ((2, 0, 4), -1),
                 ((0, 1), -1), ((0, 40), -1)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16], ids=["f64", "f32", "f16"])
@pytest.mark.parametrize("shape,axis", EMPTY_LAYOUTS, ids=str)
def test_empty_batch_every_loss(shape, axis, dtype):
    C = shape[axis]
    ps = tuple(np.delete(np.array(shape), axis))
    cd = np.float64 if dtype == np.float64 else np.float32
    x = np.zeros(shape, dtype)
    t = np.zeros(ps, dtype=np.int64)
    q = np.zeros(shape, dtype)
    F = fastce
    class_losses = [
        lambda **k: F.cross_entropy(x, t, axis=axis, **k),
        lambda **k: F.cross_entropy(x, t, axis=axis, weight=np.ones(C), label_smoothing=0.3, **k),
        lambda **k: F.cross_entropy(x, q, axis=axis, **k),
        lambda **k: F.nll_loss(x, t, axis=axis, **k),
    ]
    for f in class_losses:
        assert np.isnan(f()) and type(f()) is np.dtype(cd).type
        assert f(reduction="sum") == 0 and type(f(reduction="sum")) is np.dtype(cd).type
        none = f(reduction="none")
        assert none.shape == ps and none.dtype == dtype   # per-sample: the input's float dtype
        for red in ("mean", "sum", "none"):
            loss, g = f(reduction=red, return_grad=True)
            assert g.shape == shape and g.dtype == dtype
    grads = [F.cross_entropy_grad(x, t, axis=axis), F.nll_loss_grad(x, t, axis=axis, reduction="none",
                                                                    grad_output=np.zeros(ps))]
    for g in grads:
        assert g.shape == shape and g.dtype == dtype
    p = np.full(shape, 0.5, dtype)
    for f, fg in ((F.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits_grad),
                  (F.binary_cross_entropy, F.binary_cross_entropy_grad)):
        assert np.isnan(f(p, p)) and f(p, p, reduction="sum") == 0
        assert f(p, p, reduction="none").shape == shape
        assert fg(p, p).shape == shape and fg(p, p).dtype == dtype
    if shape[-1]:
        pw = np.ones(shape[-1])
        assert np.isnan(F.binary_cross_entropy_with_logits(p, p, pos_weight=pw))
    assert np.isnan(F.categorical_cross_entropy(p, t, axis=axis))
    assert F.categorical_cross_entropy(p, q, axis=axis, reduction="sum") == 0
    assert np.isnan(F.accuracy(x, t, axis=axis))
    assert F.log_softmax(x, axis=axis).shape == shape
    assert F.softmax(x, axis=axis).shape == shape
    assert F.logsumexp(x, axis=axis).shape == ps
    assert F.log_softmax_vjp(x, x, axis=axis).shape == shape
    assert F.softmax_vjp(x, x, axis=axis).shape == shape


def test_empty_binary_shapes():
    for shape in [(0,), (0, 3), (3, 0), (2, 0, 5)]:
        x = np.zeros(shape)
        loss, g = fastce.binary_cross_entropy_with_logits(x, x, reduction="none", return_grad=True)
        assert loss.shape == shape and g.shape == shape
        assert np.isnan(fastce.binary_cross_entropy(x, x))


def test_zero_classes():
    """C = 0 (an empty class axis) with a non-empty batch: no crash; indices can't be valid."""
    x = np.zeros((5, 0))
    assert fastce.log_softmax(x).shape == (5, 0)
    np.testing.assert_array_equal(fastce.logsumexp(x), np.full(5, -np.inf))
    with pytest.raises(IndexError):
        fastce.cross_entropy(x, np.zeros(5, dtype=np.int64))
    assert np.isnan(fastce.cross_entropy(x, np.full(5, -100)))
    fastce.cross_entropy(x, np.zeros((5, 0)), reduction="none", return_grad=True)  # no crash


def test_zero_classes_probability_target_matches_torch():
    """torch 2.13: cross_entropy(zeros(5, 0), zeros(5, 0)) is -sum over no classes = 0 per sample."""
    x = np.zeros((5, 0))
    np.testing.assert_array_equal(fastce.cross_entropy(x, x, reduction="none"), np.zeros(5))
    assert fastce.cross_entropy(x, x, reduction="sum") == 0
    assert fastce.cross_entropy(x, x, reduction="mean") == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,axis", [((7, 1), -1), ((300, 1), -1), ((2, 1, 130), 1), ((1,), -1)])
def test_single_class(rng, shape, axis, dtype):
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    ps = tuple(np.delete(np.array(shape), axis))
    t = np.zeros(ps, dtype=np.int64)
    loss, g = fastce.cross_entropy(x, t, axis=axis, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, np.zeros(ps))
    np.testing.assert_array_equal(g, np.zeros(shape))
    loss, g = fastce.cross_entropy(x, np.ones(shape, dtype), axis=axis, label_smoothing=0.5,
                                   return_grad=True)
    assert loss == 0 and np.all(g == 0)
    np.testing.assert_array_equal(fastce.log_softmax(x, axis=axis), np.zeros(shape))
    np.testing.assert_array_equal(fastce.softmax(x, axis=axis), np.ones(shape))
    assert_close(fastce.logsumexp(x, axis=axis), ref_logsumexp(x, axis=axis), dtype)
    assert fastce.accuracy(x, t, axis=axis) == 1.0
    assert_close(fastce.nll_loss(x, t, axis=axis), ref_nll_loss(x, t, axis=axis), dtype)


def test_empty_last_axis_with_pos_weight():
    """An empty last axis with a matching (0,) pos_weight is a valid empty input."""
    for shape in [(0,), (3, 0), (2, 4, 0)]:
        x = np.zeros(shape)
        pw = np.ones(0)
        assert np.isnan(fastce.binary_cross_entropy_with_logits(x, x, pos_weight=pw))
        assert fastce.binary_cross_entropy_with_logits(x, x, pos_weight=pw, reduction="sum") == 0
        loss, g = fastce.binary_cross_entropy_with_logits(x, x, pos_weight=pw, reduction="none",
                                                          return_grad=True)
        assert loss.shape == shape and g.shape == shape
        assert fastce.binary_cross_entropy_with_logits_grad(x, x, pos_weight=pw).shape == shape


@pytest.mark.parametrize("value", [-np.inf, np.inf, np.nan])
@pytest.mark.parametrize("shape,axis", [((2, 1), -1), ((2, 1, 3), 1), ((1,), -1)])
def test_single_class_non_finite_rows(shape, axis, value):
    """C = 1 rows of -inf / +inf / NaN: log_softmax is NaN there, so the loss is NaN (decisions.md
    rule 4; torch 2.13 gives NaN for all three) -- not 0 -- and the gradient is NaN too."""
    x = np.full(shape, value)
    t = np.zeros(tuple(np.delete(np.array(shape), axis)), dtype=np.int64)
    assert np.all(np.isnan(fastce.log_softmax(x, axis=axis)))
    loss, g = fastce.cross_entropy(x, t, axis=axis, reduction="none", return_grad=True)
    assert np.all(np.isnan(loss)), loss
    assert np.all(np.isnan(g)), g
    assert np.isnan(fastce.cross_entropy(x, t, axis=axis))
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(ref_cross_entropy(x, t, axis=axis,
                                                                            reduction="none")))


@pytest.mark.parametrize("layout", ["block", "row", "cols", "big"])
def test_inputs_never_modified(rng, layout):
    d = make_inputs(rng, layout)
    snapshot = {k: np.array(v, copy=True) for k, v in d.items() if isinstance(v, np.ndarray)}
    for name, call in calls(d):
        call()
        for k, v in snapshot.items():
            assert np.array_equal(d[k], v, equal_nan=True), f"{name} modified input {k!r}"


def test_inputs_never_modified_with_nan_inf_and_f32(rng):
    d = make_inputs(rng, "row", np.float32)
    d["x"][0, 0] = np.nan
    d["x"][1, :] = -np.inf
    d["x"][2, 3] = np.inf
    snapshot = {k: np.array(v, copy=True) for k, v in d.items() if isinstance(v, np.ndarray)}
    for name, call in calls(d):
        call()
        for k, v in snapshot.items():
            assert np.array_equal(d[k], v, equal_nan=True), f"{name} modified input {k!r}"


@pytest.mark.parametrize("layout", ["block", "cols", "big"])
def test_read_only_memmap_inputs(rng, tmp_path, layout):
    d = make_inputs(rng, layout)
    want = {name: call() for name, call in calls(d)}
    mm = {}
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            np.save(tmp_path / f"{k}.npy", v)
            mm[k] = np.load(tmp_path / f"{k}.npy", mmap_mode="r")
            assert not mm[k].flags.writeable
        else:
            mm[k] = v
    for name, call in calls(mm):
        assert_same_result(call(), want[name], err_msg=name)
    # and the results agree with the reference
    for name in want:
        ref = expected(name, d)
        if ref is not None:
            assert_close(_first(want[name]), ref, err_msg=name)


def _strided_copy(a, axis):
    """A non-contiguous view with a's values: every other element along `axis` of a bigger array."""
    shape = list(a.shape)
    shape[axis] *= 2
    big = np.full(shape, np.nan if a.dtype.kind == "f" else 0, dtype=a.dtype)
    idx = [slice(None)] * a.ndim
    idx[axis] = slice(None, None, 2)
    big[tuple(idx)] = a
    return big[tuple(idx)]


@pytest.mark.parametrize("variant", ["fortran", "stride_batch", "stride_last", "reversed", "transposed"])
@pytest.mark.parametrize("layout", ["block", "row", "cols", "big"])
def test_non_contiguous_inputs(rng, layout, variant):
    d = make_inputs(rng, layout)
    want = {name: call() for name, call in calls(d)}
    nd = {}
    for k, v in d.items():
        if not isinstance(v, np.ndarray) or v.ndim == 0:
            nd[k] = v
        elif variant == "fortran":
            nd[k] = np.asfortranarray(v)
        elif variant == "stride_batch":
            nd[k] = _strided_copy(v, 0)
        elif variant == "stride_last":
            nd[k] = _strided_copy(v, -1)
        elif variant == "reversed":
            nd[k] = v[::-1].copy()[::-1]  # negative strides, same values
        else:
            nd[k] = np.ascontiguousarray(v.T).T  # a transposed view with v's values
    if nd["x"].ndim > 1 or variant.startswith("stride"):
        assert not nd["x"].flags.c_contiguous
    for name, call in calls(nd):
        assert_same_result(call(), want[name], rtol=1e-12, err_msg=f"{name} {variant}")


def test_strided_class_axis_views(rng):
    """x[::2], x[:, ::2] and a class-axis view of a transposed array, against the reference."""
    base = rng.standard_normal((400, 34))
    for x in (base[::2], base[:, ::2], base[::3, 1::2], base.T[::2].T):
        C = x.shape[1]
        t = rng.integers(0, C, size=x.shape[0])
        assert_close(fastce.cross_entropy(x, t, reduction="none"), ref_cross_entropy(x, t, reduction="none"))
        assert_close(fastce.log_softmax(x), ref_log_softmax(x))
        g = fastce.cross_entropy_grad(x, t, reduction="sum")
        want = ref_softmax(x)
        want[np.arange(len(t)), t] -= 1
        assert_close(g, want, kind="grad")


def test_lists_python_ints_and_bools():
    F = fastce
    assert_close(F.cross_entropy([[2, 1, 0], [0, 1, 3]], [0, 2]),
                 ref_cross_entropy(np.array([[2.0, 1, 0], [0, 1, 3]]), np.array([0, 2])))
    assert type(F.cross_entropy([[2, 1, 0]], [0])) is np.float64
    assert_close(F.cross_entropy([1.0, 2.0, 3.0], 2), ref_cross_entropy(np.array([1.0, 2, 3]), np.array(2)))
    assert_close(F.cross_entropy([1, 2, 3], np.uint8(0)), ref_cross_entropy(np.array([1.0, 2, 3]), np.array(0)))
    ls = F.log_softmax([1, 2, 3])
    assert ls.dtype == np.float64
    assert_close(ls, ref_log_softmax(np.array([1.0, 2, 3])))
    xb = np.array([[True, False], [False, True]])
    assert F.log_softmax(xb).dtype == np.float64
    assert_close(F.log_softmax(xb), ref_log_softmax(xb.astype(float)))
    assert_close(F.binary_cross_entropy_with_logits(xb, xb),
                 ref_binary_cross_entropy_with_logits(xb.astype(float), xb.astype(float)))
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits([0.2, 1.5, -1.2], [0, 1, 0]), 0.42094484,
                               rtol=1e-7)
    assert_close(F.binary_cross_entropy([0.5, 1, 0], [True, True, False]),
                 ref_binary_cross_entropy(np.array([0.5, 1, 0]), np.array([1.0, 1, 0])))
    assert_close(F.binary_cross_entropy_with_logits(2, 1), ref_binary_cross_entropy_with_logits(2.0, 1.0))
    assert F.accuracy([[1, 2], [3, 0]], [1, 1]) == 0.5
    assert_close(F.categorical_cross_entropy([[0.5, 0.5]], [1]), np.log(2))
    lo, g = F.cross_entropy([[0, 0]], [[0.5, 0.5]], return_grad=True)
    assert_close(lo, np.log(2))
    assert g.dtype == np.float64
    assert_close(F.logsumexp([0, 0, 0, 0]), np.log(4))
    assert_close(F.log_softmax_vjp([[0.0, -np.inf]], [[1, 1]]), [[-1.0, 1.0]], kind="grad")


@pytest.mark.parametrize("tdtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                    np.uint32, np.uint64, np.intp, np.longlong])
@pytest.mark.parametrize("layout", ["block", "row", "cols"])
def test_integer_target_dtypes(rng, layout, tdtype):
    d = make_inputs(rng, layout)
    t64 = d["ti"]
    t = t64.astype(tdtype)
    a = d["axis"]
    F = fastce
    for f in (lambda tt: F.cross_entropy(d["x"], tt, axis=a, reduction="none", return_grad=True),
              lambda tt: F.nll_loss_grad(d["ls"], tt, axis=a, weight=d["w"]),
              lambda tt: F.categorical_cross_entropy(d["sm"], tt, axis=a),
              lambda tt: F.accuracy(d["x"], tt, axis=a)):
        assert_same_result(f(t), f(t64), rtol=0)
    assert_close(F.cross_entropy(d["x"], t, axis=a), ref_cross_entropy(d["x"], t64, axis=a))
    if np.dtype(tdtype).kind == "i":  # signed: ignore_index -100 works in the narrow dtype
        tt = t.copy()
        tt.reshape(-1)[::3] = -100
        ttw = tt.astype(np.int64)
        assert_close(F.cross_entropy(d["x"], tt, axis=a, reduction="sum"),
                     ref_cross_entropy(d["x"], ttw, axis=a, reduction="sum"))
    else:  # unsigned: the max value as ignore_index
        mx = min(int(np.iinfo(tdtype).max), int(np.iinfo(np.int64).max))  # ignore_index is an int64
        tt = t.copy()
        tt.reshape(-1)[::3] = mx
        got = F.cross_entropy(d["x"], tt, axis=a, ignore_index=mx, reduction="sum")
        want = ref_cross_entropy(d["x"], np.where(tt == mx, -100, tt.astype(np.int64)), axis=a,
                                 reduction="sum")
        assert_close(got, want)


@pytest.mark.parametrize("layout", ["block", "row", "cols", "nd_last"])
def test_float16_inputs(rng, layout):
    d = make_inputs(rng, layout, np.float16)
    for name, call in calls(d):
        got = call()
        ref = expected(name, d)
        g = got[1] if isinstance(got, tuple) else None
        if g is not None:
            assert g.dtype == np.float16 and g.shape == d["x"].shape, name
        if name in ("log_softmax", "softmax", "log_softmax_vjp", "softmax_vjp", "logsumexp"):
            assert got.dtype == np.float16, name
            assert_close(got, ref, np.float16, kind="grad", err_msg=name)
        elif name.startswith("cat_ce"):
            # default eps: reference = float16's epsilon (the input dtype), fastce = float32's (the
            # compute dtype); the spec says "the dtype's machine epsilon".  Compare with explicit eps.
            a = d["axis"]
            tgt = d["ti"] if name == "cat_ce" else d["q"]
            got = fastce.categorical_cross_entropy(d["sm"], tgt, eps=1e-3, axis=a)
            want = ref_categorical_cross_entropy(d["sm"].astype(np.float64), tgt, eps=1e-3, axis=a)
            assert_close(got, want, np.float16, err_msg=name)
        elif ref is not None and name != "accuracy":
            lo = _first(got)
            assert np.asarray(lo).dtype in (np.float32, np.float16), name
            assert_close(lo, ref, np.float16, err_msg=name)


def test_zero_dim_targets_with_1d_logits(rng):
    C = 9
    x = rng.standard_normal(C)
    F = fastce
    for t in (3, np.int8(3), np.array(3), np.array(3, dtype=np.uint64), np.int64(3)):
        assert_close(F.cross_entropy(x, t), ref_cross_entropy(x, np.array(3)))
        loss, g = F.cross_entropy(x, t, reduction="none", return_grad=True, label_smoothing=0.1)
        assert isinstance(loss, np.ndarray) and loss.shape == ()
        assert g.shape == (C,)
        assert_close(loss, ref_cross_entropy(x, np.array(3), reduction="none", label_smoothing=0.1))
        assert_close(F.nll_loss(x, t, weight=np.arange(1.0, C + 1)),
                     ref_nll_loss(x, np.array(3), weight=np.arange(1.0, C + 1)))
        assert_close(F.categorical_cross_entropy(np.abs(x) / np.abs(x).sum(), t),
                     ref_categorical_cross_entropy(np.abs(x) / np.abs(x).sum(), np.array(3)))
        assert F.accuracy(x, t) == float(np.argmax(x) == 3)
    loss = F.cross_entropy(x, -100)
    assert np.isnan(loss)
    assert F.cross_entropy(x, -100, reduction="sum") == 0
    np.testing.assert_array_equal(F.cross_entropy_grad(x, np.array(-100)), np.zeros(C))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_very_long_rows(rng, dtype):
    """C = 4M classes, one and two rows (and the same along axis=1)."""
    C = 4_000_000
    x = (rng.standard_normal((2, C)) * 3).astype(dtype)
    t = np.array([17, C - 1])
    x64 = x.astype(np.float64)
    loss, g = fastce.cross_entropy(x, t, reduction="none", return_grad=True)
    want = ref_cross_entropy(x64, t, reduction="none")
    rt = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, want, rtol=rt)
    sm = ref_softmax(x64)
    gw = sm.copy()
    gw[[0, 1], t] -= 1
    np.testing.assert_allclose(g, gw, rtol=0, atol=1e-7 if dtype == np.float32 else 1e-15)
    np.testing.assert_allclose(fastce.logsumexp(x), ref_logsumexp(x64), rtol=rt)
    np.testing.assert_allclose(fastce.softmax(x[:1]), sm[:1], rtol=0,
                               atol=1e-7 if dtype == np.float32 else 1e-15)
    np.testing.assert_allclose(fastce.cross_entropy(x[1], t[1]), want[1], rtol=rt)
    x3 = x[:1, :, None]  # (1, C, 1) with axis=1
    np.testing.assert_allclose(fastce.cross_entropy(x3, t[:1, None], axis=1), want[0], rtol=rt)


# =========================================================================== > 2**31 elements


@pytest.mark.skipif(not BIG, reason="needs ~10 GB of RAM: set FASTCE_BIG_TESTS=1")
@pytest.mark.parametrize("kind", ["row", "block", "cols"])
def test_more_than_2_31_elements(kind):
    """A float32 array of more than 2**31 elements: samples whose elements lie past 2**31 (and
    2**32) and at the very end must match the reference; 32-bit index arithmetic would read or
    write the wrong place.

    Memory: ~8.7 GB -- the array itself (zeros except the checked samples) with every result
    written in place (out=x).  Losses (per-sample targets and outputs) only for the row layout,
    which has few samples (the block/cols layouts have ~5e8 samples: targets and per-sample
    losses would need another ~10 GB).
    """
    if kind == "row":
        A, C, B = 2**31 // 1000 + 3, 1000, 1          # row kernel
    elif kind == "block":
        A, C, B = 2**31 // 4 + 5, 4, 1                # small-C block kernel
    else:
        A, C, B = 2, 4, 2**31 // 8 + 7                # (2, C, B) axis=1 column kernel; > 2**32 at the end
    shape, axis = ((A, C), -1) if B == 1 else ((A, C, B), 1)
    assert A * C * B > 2**31
    x = np.zeros(shape, dtype=np.float32)  # lazily zeroed pages
    x3 = x.reshape(A, C, B)                # a view
    S = A * B                              # samples
    # samples whose elements straddle 2**31 / 2**32, the first ones and the last ones
    cand = [0, 1, 2, S - 1, S - 2, S - 3] + list(range(S - 130, S))
    for limit in (2**31, 2**32):
        for c in range(C):
            # sample s = a*B + b has element (a*C + c)*B + b
            for off in range(-2, 3):
                e = limit + off
                a, rem = divmod(e, C * B)
                if a < A and rem // B == c:
                    cand.append(a * B + rem % B)
    check = np.unique(np.clip(cand, 0, S - 1))
    ca, cb = check // B, check % B
    rng = np.random.default_rng(5)
    x3[ca, :, cb] = rng.standard_normal((len(check), C)).astype(np.float32) * 4
    orig = x3[ca, :, cb].astype(np.float64)  # (k, C)
    rest = np.setdiff1d(np.arange(S - 1000, S), check)

    if kind == "row":  # few samples: targets and per-sample losses stay small
        t = np.zeros(S, dtype=np.int32)
        t[check] = rng.integers(0, C, size=len(check))
        tt = t.reshape(A, B) if B > 1 else t
        loss = fastce.cross_entropy(x, tt, axis=axis, reduction="none").reshape(-1)
        np.testing.assert_allclose(loss[check], ref_cross_entropy(orig, t[check], reduction="none"),
                                   rtol=2e-6)
        np.testing.assert_allclose(loss[rest], np.log(C), rtol=1e-6)
        del loss

    y = fastce.log_softmax(x, axis=axis, out=x)  # in place
    assert y is x
    np.testing.assert_allclose(x3[ca, :, cb], ref_log_softmax(orig), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(x3[rest // B, :, rest % B], -np.log(C), rtol=1e-6)

    if kind == "row":  # few samples: targets and per-sample losses stay small
        # the fused loss + gradient kernel, in place: cross_entropy(log_softmax(x)) == cross_entropy(x)
        loss, g = fastce.cross_entropy(x, tt, axis=axis, reduction="none", return_grad=True, out=x)
        assert g is x
        loss = loss.reshape(-1)
        np.testing.assert_allclose(loss[check], ref_cross_entropy(orig, t[check], reduction="none"),
                                   rtol=1e-5, atol=1e-6)
        gw = ref_softmax(orig)
        gw[np.arange(len(check)), t[check]] -= 1
        np.testing.assert_allclose(x3[ca, :, cb], gw, rtol=0, atol=1e-6)
