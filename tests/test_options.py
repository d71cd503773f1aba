"""One rule per input on every entry point (issue 8, items 4-7, 9, 10).

The same bad option must raise the same exception type from the functions, the loss objects,
linear_cross_entropy, fastce.torch and fastce.dask; masked arrays, ignore_index with
probability targets and target-first calls of categorical_cross_entropy are refused with
messages that name the argument.
"""
import numpy as np
import pytest

import fastce
from fastce import _validate as V

from reference import ref_categorical_cross_entropy, ref_cross_entropy

HUGE = 2 ** 2000
X = np.array([[1.0, 2.0, 0.5], [0.1, -1.0, 3.0]])
T = np.array([2, 0])
Q = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])


# ------------------------------------------------------------------ entry points under test
# Each takes the class-index loss's options as keywords and runs one call (constructing the
# loss object counts as part of the call: a bad option may raise from either).

def _fn(**kw):
    fastce.cross_entropy(X, T, **kw)


def _fn_grad(**kw):
    fastce.cross_entropy_grad(X, T, **kw)


def _loss_object(**kw):
    grad_output = kw.pop("grad_output", None)
    crit = fastce.CrossEntropyLoss(**kw)
    crit(X, T)
    if grad_output is not None:
        crit.backward(grad_output)


def _linear(**kw):
    if "axis" in kw:
        pytest.skip("linear_cross_entropy has no axis (classes are the head's outputs)")
    # (1, 3) hidden states through an identity head: logits are X[0]
    fastce.linear_cross_entropy(X, np.eye(3), T, **kw)


def _torch(**kw):
    torch = pytest.importorskip("torch")
    import fastce.torch as fct
    if "axis" in kw or "grad_output" in kw:
        pytest.skip("fastce.torch follows torch: fixed class dim, grad_output is a tensor")
    fct.cross_entropy(torch.tensor(X, requires_grad=True), torch.tensor(T), **kw)


def _dask(**kw):
    da = pytest.importorskip("dask.array")
    import fastce.dask as fcd
    import dask
    if "grad_output" in kw:
        kw["return_grad"] = True
    r = fcd.cross_entropy(da.from_array(X, chunks=(1, 3)), da.from_array(T, chunks=1), **kw)
    dask.compute(r)


ENTRY_POINTS = {"function": _fn, "grad_function": _fn_grad, "loss_object": _loss_object,
                "linear_cross_entropy": _linear, "torch": _torch, "dask": _dask}

# option, bad value, expected exception
BAD_OPTIONS = [
    ("axis", True, TypeError),
    ("axis", "1", TypeError),
    ("axis", 1.0, TypeError),
    ("axis", np.array([1]), TypeError),
    ("ignore_index", True, TypeError),
    ("ignore_index", "-100", TypeError),
    ("ignore_index", 2.0, TypeError),
    ("ignore_index", HUGE, ValueError),
    ("label_smoothing", True, TypeError),
    ("label_smoothing", "0.1", TypeError),
    ("label_smoothing", 1j, TypeError),
    ("label_smoothing", HUGE, ValueError),
    ("label_smoothing", float("nan"), ValueError),
    ("label_smoothing", -0.5, ValueError),
    ("z_loss", True, TypeError),
    ("z_loss", "0.1", TypeError),
    ("z_loss", [0.1], TypeError),
    ("z_loss", HUGE, ValueError),
    ("z_loss", -1.0, ValueError),
    ("softcap", True, TypeError),
    ("softcap", "30", TypeError),
    ("softcap", HUGE, ValueError),
    ("softcap", 0.0, ValueError),
    ("reduction", "avg", ValueError),
    ("reduction", np.array("mean"), ValueError),
    ("reduction", np.array(["mean", "sum"]), ValueError),
    ("reduction", None, ValueError),
    ("grad_output", HUGE, ValueError),
    ("grad_output", "1.0", TypeError),
]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("option,value,exc", BAD_OPTIONS,
                         ids=[f"{o}={str(v)[:12]}" for o, v, _ in BAD_OPTIONS])
def test_bad_option_same_exception_everywhere(entry, option, value, exc):
    if option == "grad_output" and entry in ("function", "linear_cross_entropy"):
        kw = {option: value, "return_grad": True}
    else:
        kw = {option: value}
    with pytest.raises(exc, match=option) as info:
        ENTRY_POINTS[entry](**kw)
    # the message names the option and stays readable (no 600-digit integers)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("entry", ["function", "linear_cross_entropy"])
def test_chunk_and_bool_integers(entry):
    with pytest.raises(TypeError, match="chunk_size"):
        fastce.linear_cross_entropy(X, np.eye(3), T, chunk_size=True)
    with pytest.raises(TypeError, match="axis"):
        fastce.log_softmax(X, axis=True)
    with pytest.raises(TypeError, match="axis"):
        fastce.logsumexp(X, axis=np.True_)


def test_other_losses_share_the_rules():
    y = (X > 0).astype(float)
    for call in (lambda: fastce.binary_cross_entropy_with_logits(X, y, reduction=np.array("sum")),
                 lambda: fastce.BCEWithLogitsLoss(reduction=np.array("sum")),
                 lambda: fastce.BCELoss(reduction=["mean"]),
                 lambda: fastce.NLLLoss(reduction="avg")):
        with pytest.raises(ValueError, match="reduction"):
            call()
    with pytest.raises(TypeError, match="ignore_index"):
        fastce.NLLLoss(ignore_index=True)
    with pytest.raises(TypeError, match="axis"):
        fastce.NLLLoss(axis="1")
    with pytest.raises(ValueError, match="grad_output"):
        fastce.binary_cross_entropy_with_logits(X, y, return_grad=True, grad_output=HUGE)


# ------------------------------------------------------------------ masked arrays (item 4)

def _masked(a):
    m = np.zeros(np.shape(a), bool)
    m.reshape(-1)[0] = True
    return np.ma.array(a, mask=m)


@pytest.mark.parametrize("which", ["logits", "target", "prob_target", "weight", "grad_output"])
def test_masked_arrays_refused(which):
    args = dict(logits=X, target=T, weight=None, grad_output=1.0)
    if which == "prob_target":
        args["target"] = _masked(Q)
    elif which == "weight":
        args["weight"] = _masked(np.ones(3))
    elif which == "grad_output":
        args["grad_output"] = _masked(np.ones(2))
    else:
        args[which] = _masked(args[which])
    red = "none" if which == "grad_output" else "mean"
    with pytest.raises(TypeError, match="MaskedArray"):
        fastce.cross_entropy(args["logits"], args["target"], weight=args["weight"],
                             reduction=red, return_grad=True, grad_output=args["grad_output"])


def test_masked_arrays_refused_elsewhere():
    y = (X > 0).astype(float)
    for call in (lambda: fastce.binary_cross_entropy_with_logits(_masked(X), y),
                 lambda: fastce.binary_cross_entropy(np.full((2, 3), 0.5), _masked(y)),
                 lambda: fastce.nll_loss(X, _masked(T)),
                 lambda: fastce.log_softmax(_masked(X)),
                 lambda: fastce.categorical_cross_entropy(_masked(Q), T),
                 lambda: fastce.CrossEntropyLoss(weight=_masked(np.ones(3))),
                 lambda: fastce.linear_cross_entropy(X, np.eye(3), _masked(T))):
        with pytest.raises(TypeError, match="MaskedArray"):
            call()


def test_masked_target_message_says_how_to_ignore():
    with pytest.raises(TypeError, match=r"filled\(ignore_index\)"):
        fastce.cross_entropy(X, _masked(T))
    # ...and doing what it says gives the ignored-sample result
    got = fastce.cross_entropy(X, _masked(T).filled(-100))
    assert np.isclose(got, ref_cross_entropy(X[1:], T[1:]))


# ------------------------------------------------------------------ ignore_index + probs (5)

@pytest.mark.parametrize("ignore", [0, 2, -1, 7])
def test_ignore_index_with_probability_targets_raises(ignore):
    for call in (lambda: fastce.cross_entropy(X, Q, ignore_index=ignore),
                 lambda: fastce.cross_entropy_grad(X, Q, ignore_index=ignore),
                 lambda: fastce.CrossEntropyLoss(ignore_index=ignore)(X, Q),
                 lambda: fastce.linear_cross_entropy(X, np.eye(3), Q, ignore_index=ignore)):
        with pytest.raises(ValueError, match="ignore_index.*class-index targets only"):
            call()
    # the default keeps working
    assert np.isclose(fastce.cross_entropy(X, Q), ref_cross_entropy(X, Q))


def test_ignore_index_with_probability_targets_torch():
    torch = pytest.importorskip("torch")
    import fastce.torch as fct
    with pytest.raises(ValueError, match="ignore_index"):
        fct.cross_entropy(torch.tensor(X), torch.tensor(Q), ignore_index=1)


# ------------------------------------------------------------------ categorical CE (item 6)

P = np.array([[0.2, 0.7, 0.1], [0.25, 0.25, 0.5], [0.6, 0.3, 0.1]])
Y = np.array([1, 2, 0])
ONE_HOT = np.eye(3, dtype=np.int64)[Y]


def test_categorical_target_first_is_refused():
    # Keras / sklearn order: the (integer) one-hot target passed where the probabilities go
    with pytest.raises(TypeError, match="input.*target first"):
        fastce.categorical_cross_entropy(ONE_HOT, P)
    with pytest.raises(TypeError, match="input"):
        fastce.categorical_cross_entropy(Y, P)
    # the right order matches the reference with both target formats
    want = ref_categorical_cross_entropy(P, Y)
    assert np.isclose(fastce.categorical_cross_entropy(P, Y), want)
    assert np.isclose(fastce.categorical_cross_entropy(P, ONE_HOT), want)


@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_categorical_probs_outside_unit_interval(bad):
    p = P.copy()
    p[1, 1] = bad
    with pytest.raises(ValueError, match=r"input must be probabilities in \[0, 1\]"):
        fastce.categorical_cross_entropy(p, Y)


@pytest.mark.parametrize("target", [
    np.array([[0.0, 2.0, 0.0], [0, 0, 1], [1, 0, 0]]),      # outside [0, 1]
    np.array([[0.0, 0.5, 0.0], [0, 0, 1], [1, 0, 0]]),      # row sums to 0.5
    np.array([[0.0, 1.0, 1.0], [0, 0, 1], [1, 0, 0]]),      # row sums to 2
], ids=["outside", "sum<1", "sum>1"])
def test_categorical_target_not_a_distribution(target):
    with pytest.raises(ValueError, match="target"):
        fastce.categorical_cross_entropy(P, target)


def test_categorical_label_smoothed_target_accepted():
    q = 0.9 * np.eye(3)[Y] + 0.1 / 3
    assert np.isclose(fastce.categorical_cross_entropy(P, q.astype(np.float32)),
                      ref_categorical_cross_entropy(P, q), rtol=1e-6)


def test_categorical_bad_eps_names_eps():
    for bad, exc in (("x", TypeError), (True, TypeError), (HUGE, ValueError)):
        with pytest.raises(exc, match="eps"):
            fastce.categorical_cross_entropy(P, Y, eps=bad)


# ------------------------------------------------------------------ float16 results (item 9)

def test_float16_per_sample_losses_are_float16():
    x16 = X.astype(np.float16)
    y16 = (x16 > 0).astype(np.float16)
    for loss in (fastce.cross_entropy(x16, T, reduction="none"),
                 fastce.nll_loss(x16, T, reduction="none"),
                 fastce.binary_cross_entropy_with_logits(x16, y16, reduction="none"),
                 fastce.binary_cross_entropy(np.full((2, 3), 0.5, np.float16), y16,
                                             reduction="none"),
                 fastce.categorical_cross_entropy(P.astype(np.float16), Y, reduction="none"),
                 fastce.CrossEntropyLoss(reduction="none")(x16, T)):
        assert loss.dtype == np.float16
    # reduced losses are accumulated and returned in float32, as the README says
    assert type(fastce.cross_entropy(x16, T)) is np.float32
    np.testing.assert_allclose(fastce.cross_entropy(x16, T, reduction="none"),
                               ref_cross_entropy(x16.astype(np.float64), T, reduction="none"),
                               rtol=2e-3)


# ------------------------------------------------------------------ NumPy 1.x int types (10)

@pytest.mark.parametrize("dtype", [np.longlong, np.int64, np.intc, np.uint8])
def test_every_integer_target_type(dtype):
    t = T.astype(dtype)
    assert np.isclose(fastce.cross_entropy(X, t), ref_cross_entropy(X, T))
    k = V.kernel_array(t, np.int64)
    # the kernels check type numbers: np.longlong must arrive as int64's own type number
    assert k.dtype.num == np.dtype(np.int64).num


# ------------------------------------------------------------------ divergence family (issue 12)
# The same walk for kl_div_logits, entropy, sigmoid_focal_loss, kl_div and accuracy: each entry
# point with the options it takes (fastce.torch spells axis `dim`), each bad value of each.

S = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, 0.3]])
S_T = np.ascontiguousarray(S[::-1])                  # the teacher of kl_div_logits
Y01 = (S > 0.4).astype(float)


def _torch_call(name, *args, **kw):
    torch = pytest.importorskip("torch")
    import fastce.torch as fct
    if "axis" in kw:
        kw["dim"] = kw.pop("axis")
    tensors = [torch.tensor(a, requires_grad=(i == 0)) for i, a in enumerate(args)]
    getattr(fct, name)(*tensors, **kw)


def _with_grad(fn, kw):
    if "grad_output" in kw:       # a scalar grad_output: a reduced loss (the scalar rule)
        kw = dict(kw, return_grad=True, reduction="sum")
    fn(**kw)


DIV_ENTRY_POINTS = {
    "kl_div_logits": (lambda **kw: _with_grad(lambda **k: fastce.kl_div_logits(S, S_T, **k), kw),
                      ("temperature", "reduction", "axis", "grad_output")),
    "kl_div_logits_grad": (lambda **kw: fastce.kl_div_logits_grad(S, S_T, **kw),
                           ("temperature", "reduction", "axis", "grad_output")),
    "torch.kl_div_logits": (lambda **kw: _torch_call("kl_div_logits", S, S_T, **kw),
                            ("temperature", "reduction", "axis")),
    "entropy": (lambda **kw: _with_grad(lambda **k: fastce.entropy(S, **k), kw),
                ("reduction", "axis", "grad_output")),
    "entropy_grad": (lambda **kw: fastce.entropy_grad(S, **kw), ("reduction", "axis")),
    "torch.entropy": (lambda **kw: _torch_call("entropy", S, **kw), ("reduction", "axis")),
    "sigmoid_focal_loss": (
        lambda **kw: _with_grad(lambda **k: fastce.sigmoid_focal_loss(S, Y01, **k), kw),
        ("alpha", "gamma", "reduction", "grad_output")),
    "sigmoid_focal_loss_grad": (lambda **kw: fastce.sigmoid_focal_loss_grad(S, Y01, **kw),
                                ("alpha", "gamma", "reduction")),
    "torch.sigmoid_focal_loss": (lambda **kw: _torch_call("sigmoid_focal_loss", S, Y01, **kw),
                                 ("alpha", "gamma", "reduction")),
    "kl_div": (lambda **kw: _with_grad(lambda **k: fastce.kl_div(S, Y01, **k), kw),
               ("log_target", "reduction", "grad_output")),
    "kl_div_grad": (lambda **kw: fastce.kl_div_grad(S, Y01, **kw), ("log_target", "reduction")),
    "accuracy": (lambda **kw: fastce.accuracy(S, np.array([2, 0]), **kw), ("k", "axis")),
}

DIV_BAD_OPTIONS = [
    ("temperature", True, TypeError),
    ("temperature", "2", TypeError),
    ("temperature", 1j, TypeError),
    ("temperature", np.array([2.0]), TypeError),
    ("temperature", float("nan"), ValueError),
    ("temperature", float("inf"), ValueError),
    ("temperature", 0.0, ValueError),
    ("temperature", -1.0, ValueError),
    ("temperature", HUGE, ValueError),
    ("alpha", True, TypeError),
    ("alpha", "0.25", TypeError),
    ("alpha", 1j, TypeError),
    ("alpha", float("nan"), ValueError),
    ("alpha", HUGE, ValueError),
    ("gamma", np.True_, TypeError),
    ("gamma", "2", TypeError),
    ("gamma", [2.0], TypeError),
    ("gamma", float("nan"), ValueError),
    ("gamma", -0.5, ValueError),
    ("k", True, TypeError),
    ("k", 2.0, TypeError),
    ("k", "1", TypeError),
    ("k", 0, ValueError),
    ("k", -3, ValueError),
    ("log_target", 1, TypeError),
    ("log_target", "yes", TypeError),
    ("reduction", "avg", ValueError),
    ("reduction", None, ValueError),
    ("reduction", np.array("mean"), ValueError),
    ("axis", True, TypeError),
    ("axis", "1", TypeError),
    ("axis", 1.0, TypeError),
    ("grad_output", HUGE, ValueError),
    ("grad_output", "1.0", TypeError),
]

DIV_CASES = [(entry, option, value, exc) for entry, (_, takes) in DIV_ENTRY_POINTS.items()
             for option, value, exc in DIV_BAD_OPTIONS if option in takes]


@pytest.mark.parametrize("entry,option,value,exc", DIV_CASES,
                         ids=[f"{e}-{o}={str(v)[:12]}" for e, o, v, _ in DIV_CASES])
def test_divergence_bad_option_same_exception_everywhere(entry, option, value, exc):
    name = "dim" if option == "axis" and entry.startswith("torch.") else option
    with pytest.raises(exc, match=name) as info:
        DIV_ENTRY_POINTS[entry][0](**{option: value})
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("entry", list(DIV_ENTRY_POINTS))
def test_divergence_entry_points_accept_good_options(entry):
    """The walk above is not vacuous: every entry point runs with valid values of its options."""
    good = {"temperature": np.float32(2.0), "alpha": -1, "gamma": 1, "k": np.int64(2),
            "log_target": np.bool_(False), "reduction": "sum", "axis": -1, "grad_output": 0.5}
    fn, takes = DIV_ENTRY_POINTS[entry]
    fn(**{o: good[o] for o in takes if o not in ("grad_output", "reduction")})
    if "grad_output" in takes:
        fn(grad_output=good["grad_output"])
