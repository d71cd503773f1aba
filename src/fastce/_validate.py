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


# ------------------------------------------------------------------------------ arrays

def plain_array(a, name):
    """`a` as an ndarray (no copy when it is one), refusing masked arrays.

    np.asarray drops a mask silently, so a masked logit or target would be used with whatever
    value sits under the mask.  Rather than guess what a mask should mean for each argument,
    every entry point refuses it and says how to express the intent explicitly.
    """
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a numpy.ma.MaskedArray: masks are not supported (their masked values "
            f"would be used silently). Mark ignored class-index targets explicitly with "
            f"target.filled(ignore_index), or pass {name}.filled(value) / np.asarray({name}) "
            f"if the masked values are meant to be used")
    return np.asarray(a)


def kernel_array(a, dtype):
    """`a` as an array the kernels may read: `dtype`, C-contiguous and aligned (a view with a
    byte offset, e.g. from np.frombuffer, is copied: vectorised C code may assume alignment).
    No copy when `a` already qualifies."""
    a = np.asarray(a, dtype=dtype)
    if a.dtype.num != np.dtype(dtype).num:
        # NumPy 1.x returns an equivalent type with another type number as it is (np.longlong
        # where int64 is np.long), which the kernels' typenum checks refuse: view it as `dtype`.
        a = a.view(dtype)
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
    arr = plain_array(x, name)
    compute, result = float_dtypes(arr.dtype, name)
    return kernel_array(arr, compute), result


def same_dtype_input(x, dtype, name):
    """A second operand (target, weight, ...) cast to the first operand's compute dtype."""
    arr = plain_array(x, name)
    float_dtypes(arr.dtype, name)          # rejects complex/object/str with a clear message
    return kernel_array(arr, dtype)


# ------------------------------------------------------------------------------ shapes

def split_axis(shape, axis, name="input"):
    """View `shape` as (A, C, B) around the class axis.  Returns (A, C, B, axis >= 0)."""
    ndim = len(shape)
    if ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis); got shape ()")
    ax = axis_option(axis)
    if not -ndim <= ax < ndim:
        raise ValueError(f"axis {_show(axis)} is out of range for {name} of shape {tuple(shape)}")
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
# One rule per kind of option, used by every entry point (functions, loss objects, fastce.torch,
# fastce.dask):
#   integer options (axis, ignore_index, chunk_size): Python/NumPy integers; bools are refused
#     (as NumPy and torch refuse them) -> TypeError;
#   real options (label_smoothing, z_loss, softcap, eps, scalar grad_output): real scalars;
#     bools, strings, complex numbers and arrays with dimensions -> TypeError; a value outside
#     the option's range, or an integer too large for a float -> ValueError naming the option.

def _show(value):
    """repr of a user value for a message, cut short (2**2000 has 603 digits)."""
    r = repr(value)
    return r if len(r) <= 48 else r[:40] + "...(" + str(len(r)) + " chars)"


def integer_option(value, name):
    if type(value) is int:                       # the common case, without further calls
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, not a bool; got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer; got {_show(value)}") from None


def real_option(value, name):
    """A real scalar option as a Python float (see the rules above)."""
    if type(value) is float:                     # the common case, without further calls
        return value
    if (isinstance(value, (bool, np.bool_, str, bytes, complex, np.complexfloating))
            or np.ndim(value) != 0):
        raise TypeError(f"{name} must be a real number; got {_show(value)}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} {_show(value)} is too large for a float") from None
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number; got {_show(value)}") from None


def reduction(value):
    if not isinstance(value, str) or value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {_show(value)}")
    return value


def label_smoothing(value):
    eps = real_option(value, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1]; got {_show(value)}")
    return eps


def z_loss(value):
    z = real_option(value, "z_loss")
    if not (math.isfinite(z) and z >= 0.0):
        raise ValueError(f"z_loss must be finite and >= 0; got {_show(value)}")
    return z


def softcap(value, dtype=np.float64):
    """None (off) -> 0.0, the kernels' "no softcap"; otherwise a positive float that is a
    normal number of the compute `dtype` (the kernels divide by it in that dtype)."""
    if value is None:
        return 0.0
    c = real_option(value, "softcap")
    if not (math.isfinite(c) and c > 0.0):
        raise ValueError(f"softcap must be finite and > 0 (or None); got {_show(value)}")
    info = np.finfo(dtype)
    if not float(info.tiny) <= c <= float(info.max):
        raise ValueError(f"softcap {_show(value)} is not a normal {np.dtype(dtype).name} number "
                         f"(the compute dtype); use a value in [{info.tiny}, {info.max}]")
    return c


def positive_int(value, name):
    v = integer_option(value, name)
    if v < 1:
        raise ValueError(f"{name} must be >= 1; got {v}")
    return v


DEFAULT_IGNORE_INDEX = -100


def ignore_index(value):
    v = integer_option(value, "ignore_index")
    if not _INT64.min <= v <= _INT64.max:
        raise ValueError(f"ignore_index {_show(v)} does not fit in int64")
    return v


def axis_option(value):
    return integer_option(value, "axis")


def eps_value(value, dtype):
    if value is None:
        return float(np.finfo(dtype).eps)
    eps = real_option(value, "eps")
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"eps must be in [0, 0.5); got {_show(value)}")
    return eps


# ------------------------------------------------------------------------------ targets

def class_index_target(target, samples, C, ignore, logits_shape):
    """Integer class indices of shape `samples`, every value in [0, C) or == ignore.

    Returns a C-contiguous int64 array.
    """
    t = plain_array(target, "target")
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


def probability_target(target, shape, compute, ignore=DEFAULT_IGNORE_INDEX):
    """Class probabilities of the input's shape, as `compute` floats.

    `ignore` is the caller's ignore_index: it applies to class indices only, so a value other
    than the default is refused here rather than silently having no effect (torch refuses
    ignore_index >= 0 with probability targets; fastce refuses every explicit value).
    """
    if ignore != DEFAULT_IGNORE_INDEX:
        raise ValueError(
            f"ignore_index={_show(ignore)} applies to class-index targets only; this target has "
            f"the input's shape {tuple(shape)} (class probabilities), which have no ignored "
            f"samples. Drop ignore_index, or give per-sample weight 0 via reduction='none'")
    t = plain_array(target, "target")
    if t.dtype.kind != "f":
        raise TypeError(
            f"probability target must have a float dtype; got {t.dtype} with the input's shape "
            f"{tuple(t.shape)} (class-index targets drop the class axis)")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"target shape {tuple(t.shape)} does not match input shape {tuple(shape)}")
    return kernel_array(t, compute)


def unit_interval(a, name, what):
    """Refuse values outside [0, 1] (NaN passes: it propagates to the result)."""
    if not a.size:
        return
    if a.dtype.char in "fd" and a.flags.c_contiguous and a.flags.aligned and a.dtype.isnative:
        # the kernel arrays (every caller's): one threaded C scan (first_outside_unit in
        # _k_binary.h); NumPy below for anything else
        from ._binary import first_outside_unit
        from ._parallel import nthreads
        i = first_outside_unit(a, nthreads(a.size, "binary"))
        bad = a.reshape(-1)[i] if i >= 0 else None
    else:
        outside = (a < 0) | (a > 1)
        bad = a[outside].flat[0] if outside.any() else None
    if bad is not None:
        raise ValueError(f"{what}: {name} must be probabilities in [0, 1]; found {bad!r}")


def predicted_probabilities(probs, what):
    """Predicted probabilities (the first argument of a loss on probabilities).

    An integer or bool array is refused: predictions are floats, and an integer array there
    almost always means the arguments were passed target-first (sklearn's and Keras' order).
    """
    p = plain_array(probs, "input")
    if p.dtype.kind not in "f":
        raise TypeError(
            f"{what}: input must be floating-point predicted probabilities; got dtype "
            f"{p.dtype}. The arguments are (input, target), predictions first: sklearn's "
            f"log_loss and Keras take the target first")
    return p


def distribution_target(target, shape, dtype, axis, what):
    """A target distribution of the input's shape: entries in [0, 1] summing to 1 along `axis`
    (up to rounding of the target's own dtype; label-smoothed targets qualify)."""
    q = plain_array(target, "target")
    float_dtypes(q.dtype, "target")
    if tuple(q.shape) != tuple(shape):
        raise ValueError(f"target shape {tuple(q.shape)} does not match input shape {tuple(shape)}")
    q = kernel_array(q, dtype)
    unit_interval(q, "target", what)
    if q.size:
        tol = 1e-3 if np.dtype(dtype).itemsize < 8 else 1e-6
        total = q.sum(axis=axis, dtype=np.float64)
        off = ~(np.abs(total - 1.0) <= tol)         # NaN rows are left to propagate
        off &= ~np.isnan(total)
        if off.any():
            raise ValueError(
                f"{what}: each target row must be a distribution summing to 1 along axis "
                f"{axis}; found a row summing to {total[off].flat[0]!r} (class-index targets "
                f"drop the class axis; arguments are (input, target))")
    return q


# ------------------------------------------------------------------------------ weights

def class_weight(weight, C):
    """Per-class weights as C-contiguous float64 of shape (C,), or None."""
    if weight is None:
        return None
    w = plain_array(weight, "weight")
    float_dtypes(w.dtype, "weight")
    if w.shape != (C,):
        raise ValueError(f"weight must have shape ({C},) (one per class); got {tuple(w.shape)}")
    return kernel_array(w, np.float64)


def broadcast_weight(weight, shape, compute, name="weight"):
    """Elementwise weights broadcast to `shape`, C-contiguous, or None."""
    if weight is None:
        return None
    w = plain_array(weight, name)
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
    pw = plain_array(value, "pos_weight")
    float_dtypes(pw.dtype, "pos_weight")
    K = shape[-1] if len(shape) else 1
    lead = pw.shape[:-1] if pw.ndim else ()
    if any(d != 1 for d in lead) or (pw.ndim and pw.shape[-1] not in (1, K)) or pw.ndim > max(len(shape), 1):
        raise ValueError(f"pos_weight must broadcast along the last axis of the input: shape "
                         f"{tuple(pw.shape)} given, input shape {tuple(shape)} (expected ({K},))")
    return kernel_array(np.broadcast_to(pw.reshape(-1), (K,)), compute)


# ------------------------------------------------------------------------------ grad_output

def grad_output_scalar(g):
    if type(g) is float:                        # the common case, without NumPy calls
        return g
    if np.ndim(g) != 0:
        raise ValueError(f"grad_output must be a scalar for a reduced loss; got shape {np.shape(g)}")
    return real_option(g, "grad_output")


def grad_output_array(g, shape, dtype):
    """grad_output for reduction='none': broadcast to the per-sample shape, flat, contiguous."""
    g = plain_array(g, "grad_output")
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


# ------------------------------------------------------------------------------ divergence options
# Options of fastce.divergence (kl_div_logits, sigmoid_focal_loss, kl_div; accuracy's k is
# positive_int above), on the rules above: real_option / integer_option refuse bools, strings, complex numbers and
# arrays with a TypeError naming the option; the ranges below are ValueErrors naming it (NaN
# is outside every range).

def temperature(value, dtype=np.float64):
    """(temperature, 1/temperature): finite and > 0, with 1/temperature a finite nonzero number
    of the compute `dtype` (the kernels scale the logits by it in that dtype)."""
    tau = real_option(value, "temperature")
    if not (math.isfinite(tau) and tau > 0.0):
        raise ValueError(f"temperature must be finite and > 0; got {_show(value)}")
    name = np.dtype(dtype).name
    with np.errstate(over="ignore", under="ignore"):
        k = float(np.dtype(dtype).type(1.0 / tau))
    if not (math.isfinite(k) and k > 0.0):
        raise ValueError(f"temperature {_show(value)} is out of range for {name}: "
                         f"1/temperature must be a finite nonzero {name}")
    return tau, 1.0 / tau


def focal_alpha(value):
    """sigmoid_focal_loss's alpha: any finite real (a negative value disables the weighting)."""
    a = real_option(value, "alpha")
    if not math.isfinite(a):
        raise ValueError(f"alpha must be finite (a negative value disables the weighting); "
                         f"got {_show(value)}")
    return a


def focal_gamma(value):
    g = real_option(value, "gamma")
    if not (math.isfinite(g) and g >= 0.0):
        raise ValueError(f"gamma must be finite and >= 0; got {_show(value)}")
    return g


def bool_option(value, name):
    """A flag (log_target): a Python or NumPy bool; 0/1 and strings are refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {_show(value)}")
    return bool(value)


def choice_option(value, allowed, name="reduction"):
    """One of the strings `allowed` (a reduction with more spellings than REDUCTIONS)."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}; got {_show(value)}")
    return value
