"""Every input rule of fastce, in one place.

The kernels run with bounds checks off and trust what they are given, so this module is the
security boundary: after it, arrays are C-contiguous, of the compute dtype, of the sizes the
kernels assume, and class indices are inside [0, C) or equal to ignore_index.
"""
import math
import operator

import numpy as np

REDUCTIONS = ("mean", "sum", "none")
_INT64 = np.iinfo(np.int64)


# ------------------------------------------------------------------------------ dtypes

def kernel_array(a, dtype):
    """`a` as an array the kernels may read: `dtype`, C-contiguous and aligned (a view with a
    byte offset, e.g. from np.frombuffer, is copied: vectorised C code may assume alignment).
    No copy when `a` already qualifies."""
    a = np.asarray(a, dtype=dtype)
    flags = a.flags
    if flags.c_contiguous and flags.aligned:
        return a
    return np.require(a, requirements=["C", "A"])


def float_dtypes(dtype, name):
    """(compute dtype, result dtype) for an input of `dtype`.

    float32/float64 compute natively; float16 computes in float32 and returns float16 results;
    wider floats compute in float64; bools and integers are promoted to float64.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        if dtype == np.float16:
            return np.dtype(np.float32), dtype
        if dtype in (np.float32, np.float64):
            return dtype, dtype
        return np.dtype(np.float64), dtype
    if dtype.kind in "biu":
        return np.dtype(np.float64), np.dtype(np.float64)
    raise TypeError(f"{name} must be a real numeric array; got dtype {dtype}")


def float_input(x, name):
    """`x` as a C-contiguous array of its compute dtype (no copy when already so).

    Returns (array, result dtype).
    """
    arr = np.asarray(x)
    compute, result = float_dtypes(arr.dtype, name)
    return kernel_array(arr, compute), result


def same_dtype_input(x, dtype, name):
    """A second operand (target, weight, ...) cast to the first operand's compute dtype."""
    arr = np.asarray(x)
    float_dtypes(arr.dtype, name)          # rejects complex/object/str with a clear message
    return kernel_array(arr, dtype)


# ------------------------------------------------------------------------------ shapes

def split_axis(shape, axis, name="input"):
    """View `shape` as (A, C, B) around the class axis.  Returns (A, C, B, axis >= 0)."""
    ndim = len(shape)
    if ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis); got shape ()")
    try:
        ax = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an integer; got {axis!r}") from None
    if not -ndim <= ax < ndim:
        raise ValueError(f"axis {axis} is out of range for {name} of shape {tuple(shape)}")
    ax %= ndim
    A = math.prod(shape[:ax])          # Python ints: exact, and far cheaper than np.prod
    B = math.prod(shape[ax + 1:])
    return A, int(shape[ax]), B, ax


def sample_shape(shape, ax):
    return tuple(shape[:ax]) + tuple(shape[ax + 1:])


def same_shape(a, b, what_a, what_b):
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{what_b} shape {tuple(b.shape)} does not match {what_a} shape "
                         f"{tuple(a.shape)}")


# ------------------------------------------------------------------------------ options

def reduction(value):
    if not isinstance(value, str) or value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {value!r}")
    return value


def label_smoothing(value):
    if isinstance(value, (str, bytes)):
        raise TypeError(f"label_smoothing must be a number; got {value!r}")
    try:
        eps = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"label_smoothing must be a number; got {value!r}") from None
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1]; got {value!r}")
    return eps


def z_loss(value):
    try:
        z = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"z_loss must be a number; got {value!r}") from None
    if not (math.isfinite(z) and z >= 0.0):
        raise ValueError(f"z_loss must be finite and >= 0; got {value!r}")
    return z


def softcap(value, dtype=np.float64):
    """None (off) -> 0.0, the kernels' "no softcap"; otherwise a positive float that is a
    normal number of the compute `dtype` (the kernels divide by it in that dtype)."""
    if value is None:
        return 0.0
    try:
        c = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"softcap must be a number or None; got {value!r}") from None
    if not (math.isfinite(c) and c > 0.0):
        raise ValueError(f"softcap must be finite and > 0 (or None); got {value!r}")
    info = np.finfo(dtype)
    if not float(info.tiny) <= c <= float(info.max):
        raise ValueError(f"softcap {value!r} is not a normal {np.dtype(dtype).name} number "
                         f"(the compute dtype); use a value in [{info.tiny}, {info.max}]")
    return c


def positive_int(value, name):
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer; got {value!r}") from None
    if v < 1:
        raise ValueError(f"{name} must be >= 1; got {v}")
    return v


def ignore_index(value):
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"ignore_index must be an integer; got {value!r}") from None
    if not _INT64.min <= v <= _INT64.max:
        raise ValueError(f"ignore_index {v} does not fit in int64")
    return v


def eps_value(value, dtype):
    if value is None:
        return float(np.finfo(dtype).eps)
    eps = float(value)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"eps must be in [0, 0.5); got {value!r}")
    return eps


# ------------------------------------------------------------------------------ targets

def class_index_target(target, samples, C, ignore, logits_shape):
    """Integer class indices of shape `samples`, every value in [0, C) or == ignore.

    Returns a C-contiguous int64 array.
    """
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(
            f"class-index target must have an integer dtype; got {t.dtype} with shape "
            f"{tuple(t.shape)} (probability targets need the input's shape {tuple(logits_shape)})")
    if tuple(t.shape) != tuple(samples):
        raise ValueError(
            f"target shape {tuple(t.shape)} does not match the input shape {tuple(logits_shape)} "
            f"without its class axis, {tuple(samples)}")
    # Fast path: min and max in range means every value is valid, without mask temporaries.
    # Comparisons happen in the target's own dtype (no wrap-around for uint64 or huge values).
    if t.size and not (t.min() >= 0 and t.max() < C):
        bad = (t < 0) | (t >= C)
        if ignore is not None:
            bad &= t != ignore
        if bad.any():
            value = t[bad].flat[0]
            raise IndexError(
                f"target value {value} is out of bounds for {C} classes "
                f"(valid: 0..{C - 1}" + (f", or ignore_index={ignore})" if ignore is not None else ")"))
    return kernel_array(t, np.int64)


def target_format(target, logits_shape, samples):
    """'index' or 'prob', from the target's exact shape.

    The per-sample shape means class indices, the input's shape means probabilities; any other
    shape is a ValueError naming both.  The dtype is checked afterwards, by the format's own
    function, so a float array of the per-sample shape gets a TypeError that says why.
    """
    shape = tuple(np.shape(target))
    if shape == tuple(samples):
        return "index"
    if shape == tuple(logits_shape):
        return "prob"
    raise ValueError(
        f"target shape {shape} does not match input shape {tuple(logits_shape)}: class-index "
        f"targets have the input's shape without the class axis, {tuple(samples)}; probability "
        f"targets have the input's shape")


def probability_target(target, shape, compute):
    t = np.asarray(target)
    if t.dtype.kind != "f":
        raise TypeError(
            f"probability target must have a float dtype; got {t.dtype} with the input's shape "
            f"{tuple(t.shape)} (class-index targets drop the class axis)")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"target shape {tuple(t.shape)} does not match input shape {tuple(shape)}")
    return kernel_array(t, compute)


# ------------------------------------------------------------------------------ weights

def class_weight(weight, C):
    """Per-class weights as C-contiguous float64 of shape (C,), or None."""
    if weight is None:
        return None
    w = np.asarray(weight)
    float_dtypes(w.dtype, "weight")
    if w.shape != (C,):
        raise ValueError(f"weight must have shape ({C},) (one per class); got {tuple(w.shape)}")
    return kernel_array(w, np.float64)


def broadcast_weight(weight, shape, compute, name="weight"):
    """Elementwise weights broadcast to `shape`, C-contiguous, or None."""
    if weight is None:
        return None
    w = np.asarray(weight)
    float_dtypes(w.dtype, name)
    try:
        full = np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(f"{name} shape {tuple(w.shape)} does not broadcast to input shape "
                         f"{tuple(shape)}") from None
    return kernel_array(full, compute)


def pos_weight(value, shape, compute):
    """pos_weight broadcast along the last axis: returns a (K,) array with K = shape[-1]."""
    if value is None:
        return None
    pw = np.asarray(value)
    float_dtypes(pw.dtype, "pos_weight")
    K = shape[-1] if len(shape) else 1
    lead = pw.shape[:-1] if pw.ndim else ()
    if any(d != 1 for d in lead) or (pw.ndim and pw.shape[-1] not in (1, K)) or pw.ndim > max(len(shape), 1):
        raise ValueError(f"pos_weight must broadcast along the last axis of the input: shape "
                         f"{tuple(pw.shape)} given, input shape {tuple(shape)} (expected ({K},))")
    return kernel_array(np.broadcast_to(pw.reshape(-1), (K,)), compute)


# ------------------------------------------------------------------------------ grad_output

def grad_output_scalar(g):
    if type(g) is float or type(g) is int:     # the common case, without NumPy calls
        return float(g)
    if np.ndim(g) != 0:
        raise ValueError(f"grad_output must be a scalar for a reduced loss; got shape {np.shape(g)}")
    g = np.asarray(g)
    float_dtypes(g.dtype, "grad_output")
    return float(g)


def grad_output_array(g, shape, dtype):
    """grad_output for reduction='none': broadcast to the per-sample shape, flat, contiguous."""
    g = np.asarray(g)
    float_dtypes(g.dtype, "grad_output")
    try:
        full = np.broadcast_to(g, shape)
    except ValueError:
        raise ValueError(f"grad_output shape {tuple(g.shape)} does not broadcast to the "
                         f"per-sample loss shape {tuple(shape)}") from None
    return kernel_array(full, dtype).reshape(-1)


# ------------------------------------------------------------------------------ out= buffers

def check_out(out, shape, dtype, name="out"):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array; got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(out.shape)}; expected {tuple(shape)}")
    if out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype}; expected {np.dtype(dtype)}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not out.flags.aligned:
        raise ValueError(f"{name} must be aligned for its dtype")


def _safe_alias(out, src, in_place_ok):
    """out may be disjoint from src, or exactly src when the kernel supports in-place."""
    if src is None or not np.may_share_memory(out, src):
        return True
    return (in_place_ok and src.dtype == out.dtype
            and out.__array_interface__["data"][0] == src.__array_interface__["data"][0]
            and out.strides == src.strides and out.shape == src.shape)


def output_buffer(out, shape, result_dtype, compute_dtype, sources=()):
    """The buffer a kernel should write, and the caller's `out` to copy into afterwards.

    `sources` are all the arrays the kernel reads, the primary input first: out may be that
    input itself (every kernel reads an element before writing it), but any other overlap —
    partial, or with a target, weight or grad_output — is routed through a temporary.
    Returns (buf, pending): write the kernel result into `buf`, then pass both to deliver().
    """
    if out is not None:
        check_out(out, shape, result_dtype)
        if out.dtype == compute_dtype and all(
                _safe_alias(out, s, i == 0) for i, s in enumerate(sources)):
            return out, None
    return np.empty(shape, dtype=compute_dtype), out


def deliver(buf, pending, result_dtype):
    if pending is not None:
        np.copyto(pending, buf, casting="unsafe")
        return pending
    if buf.dtype != result_dtype:
        return buf.astype(result_dtype)
    return buf
