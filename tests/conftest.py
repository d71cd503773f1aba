"""Shared fixtures and helpers for the fastce test suite."""

import os
import sys

import numpy as np
import pytest

# make ``import reference`` work regardless of how pytest was invoked
sys.path.insert(0, os.path.dirname(__file__))

FLOAT_DTYPES = [np.float32, np.float64, np.float16]
DTYPE_IDS = ["f32", "f64", "f16"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def rng(request):
    """A deterministic generator, different per test (seeded from the test id)."""
    seed = sum(map(ord, request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="session")
def F(torch):
    import torch.nn.functional as F

    return F


# --------------------------------------------------------------------------- helpers


def fd_grad(f, x, h=1e-3):
    """4th-order central finite-difference gradient of the scalar function ``f`` at ``x``.

    g_i = (-f(x+2h e_i) + 8 f(x+h e_i) - 8 f(x-h e_i) + f(x-2h e_i)) / (12 h)
    ``x`` is float64; ``f`` must return something convertible to a float.
    """
    x = np.array(x, dtype=np.float64, copy=True)
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    gflat = g.reshape(-1)
    for i in range(flat.size):
        x0 = flat[i]
        vals = []
        for step in (2 * h, h, -h, -2 * h):
            flat[i] = x0 + step
            vals.append(float(f(x.copy())))
        flat[i] = x0
        gflat[i] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
    return g


def compute_dtype(dtype):
    """The dtype fastce computes (and returns losses) in for an input dtype."""
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype in (np.float32, np.float64):
        return dtype
    return np.dtype(np.float64)


def grad_dtype(dtype):
    """The dtype of gradients / row-op outputs for an input dtype."""
    dtype = np.dtype(dtype)
    if dtype in (np.float16, np.float32, np.float64):
        return dtype
    return np.dtype(np.float64)


def loss_tol(dtype):
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return dict(rtol=1e-10, atol=1e-12)
    if dtype == np.float32:
        return dict(rtol=1e-5, atol=1e-6)
    # float16 inputs are computed in float32, but e.g. losses near zero lose digits
    return dict(rtol=1e-4, atol=1e-5)


def grad_tol(dtype):
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return dict(rtol=1e-10, atol=1e-12)
    if dtype == np.float32:
        return dict(rtol=1e-5, atol=1e-6)
    # float16 gradients are stored in float16 (relative precision 2**-11)
    return dict(rtol=2e-3, atol=1e-4)


def assert_close(actual, desired, dtype=np.float64, kind="loss", err_msg=""):
    tol = loss_tol(dtype) if kind == "loss" else grad_tol(dtype)
    if kind == "loss" and getattr(actual, "dtype", None) == np.float16:
        tol = grad_tol(np.float16)      # per-sample float16 losses are stored in float16
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64), err_msg=err_msg, **tol
    )


def check_loss_type(loss, reduction, in_dtype, per_sample_shape):
    """mean/sum -> NumPy scalar of the compute dtype; none -> ndarray of the per-sample shape
    in the input's float dtype (float16 for float16 input, like every other result)."""
    cd = compute_dtype(in_dtype)
    if reduction == "none":
        assert isinstance(loss, np.ndarray), type(loss)
        assert loss.shape == tuple(per_sample_shape)
        assert loss.dtype == grad_dtype(in_dtype), (loss.dtype, grad_dtype(in_dtype))
    else:
        assert type(loss) is cd.type, f"expected {cd.type.__name__}, got {type(loss).__name__}"


def check_grad_type(grad, x_shape, in_dtype):
    assert isinstance(grad, np.ndarray), type(grad)
    assert grad.shape == tuple(x_shape)
    assert grad.dtype == grad_dtype(in_dtype), (grad.dtype, grad_dtype(in_dtype))


# --------------------------------------------------------------------------- class-axis layouts
# name -> (logits shape, axis).  Per-sample shape = shape with the class axis removed.
# Between them the layouts reach every kernel path (tests/kernel_paths.py): a short-row block
# (C <= 16), one long row per item (C > 16), the C = 2 closed form and column tiles (axis=1).
LAYOUTS = {
    "2d": ((5, 4), -1),
    "3d_classes_last": ((3, 2, 20), -1),
    "2d_c2": ((7, 2), -1),
    "4d_axis1": ((2, 4, 3, 2), 1),
    "1d": ((4,), -1),
}
LAYOUT_IDS = list(LAYOUTS)


def per_sample_shape(shape, axis):
    shape = list(shape)
    del shape[axis]
    return tuple(shape)


def make_logits(rng, shape, dtype=np.float64, scale=2.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def make_index_target(rng, shape, axis, C=None, ignore_frac=0.0, ignore_index=-100, dtype=np.int64):
    ps = per_sample_shape(shape, axis)
    C = shape[axis] if C is None else C
    t = rng.integers(0, C, size=ps)
    if ignore_frac:
        t = np.where(rng.random(ps) < ignore_frac, ignore_index, t)
        if t.size and np.all(t == ignore_index):  # keep at least one sample that counts
            t.reshape(-1)[0] = (ignore_index + 1) % C if 0 <= ignore_index < C else 0
    return np.asarray(t, dtype=dtype)


def make_prob_target(rng, shape, axis, dtype=np.float64):
    z = rng.standard_normal(shape) * 1.5
    z = np.moveaxis(z, axis, -1)
    q = np.exp(z - z.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    return np.moveaxis(q, -1, axis).astype(dtype)


def make_onehot_target(rng, shape, axis, dtype=np.float64):
    C = shape[axis]
    idx = rng.integers(0, C, size=per_sample_shape(shape, axis))
    oh = np.eye(C)[idx]  # class axis last
    return np.moveaxis(oh, -1, axis).astype(dtype)


def make_grad_output(rng, reduction, ps_shape):
    if reduction == "none":
        return rng.uniform(-1.5, 1.5, size=ps_shape)
    return 0.7


# --------------------------------------------------------------------------- torch bridges


def torch_class_axis1(torch, a, axis):
    """NumPy array with class axis ``axis`` -> float64 torch tensor with class axis 1 (torch layout)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim >= 2:
        a = np.moveaxis(a, axis, 1)
    return torch.from_numpy(np.array(a))


def numpy_from_torch_class_axis1(t, axis, ndim):
    a = t.detach().numpy()
    if ndim >= 2:
        a = np.moveaxis(a, 1, axis)
    return a


def torch_loss_and_grad(torch, fn, x, axis, grad_output, reduction, *, class_axis=True):
    """Evaluate ``fn(x_t)`` (a torch loss) in float64 and return (loss, d(go*loss)/dx) as NumPy."""
    x64 = np.asarray(x, dtype=np.float64)
    if class_axis:
        xt = torch_class_axis1(torch, x64, axis)
    else:
        xt = torch.from_numpy(np.array(x64))
    xt.requires_grad_(True)
    loss = fn(xt)
    if reduction == "none":
        loss.backward(torch.as_tensor(np.asarray(grad_output, dtype=np.float64)).expand_as(loss))
    else:
        loss.backward(torch.tensor(float(grad_output), dtype=torch.float64))
    g = xt.grad
    if class_axis:
        g = numpy_from_torch_class_axis1(g, axis, x64.ndim)
    else:
        g = g.numpy()
    return loss.detach().numpy(), g


# --------------------------------------------------------------------------- cross-entropy / nll cases

CE_OPTIONS = {
    "plain": dict(target="index"),
    "weight": dict(target="index", weight=True),
    "ignore": dict(target="index", ignore_frac=0.3),
    "ignore_index_1": dict(target="index", ignore_frac=0.3, ignore_index=1),
    "smooth": dict(target="index", label_smoothing=0.1),
    "weight_ignore_smooth": dict(target="index", weight=True, ignore_frac=0.3, label_smoothing=0.25),
    "prob": dict(target="prob"),
    "prob_weight": dict(target="prob", weight=True),
    "prob_smooth": dict(target="prob", label_smoothing=0.2),
    "prob_weight_smooth": dict(target="prob", weight=True, label_smoothing=0.3),
    "onehot": dict(target="onehot"),
}
NLL_OPTIONS = {k: v for k, v in CE_OPTIONS.items() if v["target"] == "index" and "label_smoothing" not in v}
REDUCTIONS = ["mean", "sum", "none"]


def make_ce_case(rng, layout, option, dtype=np.float64, options=CE_OPTIONS):
    """Return (x, target, kwargs) for a class-axis loss; kwargs holds axis/weight/ignore_index/label_smoothing."""
    shape, axis = LAYOUTS[layout]
    opt = options[option]
    C = shape[axis]
    x = make_logits(rng, shape, dtype)
    kw = dict(axis=axis)
    if opt.get("weight"):
        kw["weight"] = rng.uniform(0.2, 2.0, size=C).astype(dtype)
    if "label_smoothing" in opt:
        kw["label_smoothing"] = opt["label_smoothing"]
    if opt["target"] == "index":
        ii = opt.get("ignore_index", -100)
        if "ignore_index" in opt:
            kw["ignore_index"] = ii
        t = make_index_target(rng, shape, axis, ignore_frac=opt.get("ignore_frac", 0.0), ignore_index=ii)
    elif opt["target"] == "prob":
        t = make_prob_target(rng, shape, axis, dtype)
    else:
        t = make_onehot_target(rng, shape, axis, dtype)
    return x, t, kw


def torch_ce_fn(torch, F, target, kw, reduction, loss="cross_entropy"):
    """A closure xt -> torch loss, matching fastce kwargs ``kw`` (with class axis moved to 1)."""
    axis = kw.get("axis", -1)
    target = np.asarray(target)
    if np.issubdtype(target.dtype, np.integer):
        tt = torch.from_numpy(np.array(target, dtype=np.int64))  # keeps 0-d
    else:
        tt = torch_class_axis1(torch, target, axis)
    extra = {}
    if kw.get("weight") is not None:
        extra["weight"] = torch.from_numpy(np.asarray(kw["weight"], dtype=np.float64))
    if "ignore_index" in kw:
        extra["ignore_index"] = kw["ignore_index"]
    if loss == "cross_entropy":
        if "label_smoothing" in kw:
            extra["label_smoothing"] = kw["label_smoothing"]
        fn = F.cross_entropy
    else:
        fn = F.nll_loss

    def call(xt):
        if xt.dim() == 1:
            # torch 2.13 fails on unbatched (C,) input with label smoothing + mean
            # ("output with shape [] doesn't match the broadcast shape [1]"): use (1, C).
            out = fn(xt.unsqueeze(0), tt.unsqueeze(0), reduction=reduction, **extra)
            return out[0] if reduction == "none" else out
        return fn(xt, tt, reduction=reduction, **extra)

    return call



def assert_loss_and_grad(loss_fn, grad_fn, x, t, kw, reduction, grad_output, want_loss, want_grad,
                         dtype, per_sample):
    """Loss (type and value) and grad_output-scaled gradient (type and value) of one case."""
    loss = loss_fn(x, t, reduction=reduction, **kw)
    check_loss_type(loss, reduction, dtype, per_sample)
    assert_close(loss, want_loss, dtype)
    grad = grad_fn(x, t, reduction=reduction, grad_output=grad_output, **kw)
    check_grad_type(grad, x.shape, dtype)
    assert_close(grad, want_grad, dtype, kind="grad")


# --------------------------------------------------------------------------- skipped references
# The suite compares fastce against optional libraries (PyTorch above all) and skips those tests
# when a library is missing.  So that a quick `pytest` never looks complete when it was not, the
# run ends with one line naming what was skipped and the command that enables it.
OPTIONAL_INSTALL = {
    "torch": "torch==2.13.0",           # the CPU build the suite is checked against
    "dask": '"dask[array]"',
    "hypothesis": "hypothesis",
    "threadpoolctl": "threadpoolctl",
    "matplotlib": "matplotlib",
    "mypy": "mypy",
}
_SKIP_REASONS = (r"could not import '([\w.]+)'", r"\b([\w.]+) (?:is )?not installed")


def skipped_for_missing_modules(skipped_reports):
    """{top-level module: number of skipped tests (or modules)} for skips caused by a missing
    optional library, from pytest's skip reports."""
    import re
    from collections import Counter

    counts = Counter()
    for rep in skipped_reports:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        for pattern in _SKIP_REASONS:
            m = re.search(pattern, reason)
            if m and m.group(1).split(".")[0] in OPTIONAL_INSTALL:
                counts[m.group(1).split(".")[0]] += 1
                break
    return counts


def pytest_terminal_summary(terminalreporter):
    counts = skipped_for_missing_modules(terminalreporter.stats.get("skipped", []))
    if not counts:
        return
    what = ", ".join(f"{n} need {mod}" for mod, n in counts.most_common())
    command = "pip install " + " ".join(OPTIONAL_INSTALL[mod] for mod, _ in counts.most_common())
    terminalreporter.write_line(
        f"fastce: reference tests skipped because optional libraries are missing ({what}); "
        f"run them with: {command}", yellow=True, bold=True)
