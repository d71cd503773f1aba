"""kl_div_logits, entropy, kl_div, sigmoid_focal_loss and top-k accuracy (issue 12).

Inputs come from the shared fixtures: class-axis cases use `ce` (logits x; the teacher logits
are the case's standard-normal array g), elementwise cases use `bce` (logits x, {0, 1} targets
t) and, for kl_div, the `ce` case's log_softmax (logp) against its softmax (p).  Baselines:
NumPy implementations of the formulas written here, in the input dtype, checked against the
same in float64.  Peers: torch eager autograd and jax.jit(value_and_grad) of the textbook
formulas (optax where it has the function).  The memcpy row copies one input array
(kl_div_logits reads two: its floor is twice that row).
"""
from functools import partial

import numpy as np

import fastce as F
from benchkit import jax_call, run, torch_value_and_grad

TAU = 2.0


def _log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


# ================================================================== NumPy baselines

def numpy_kl_logits(s, t, axis, tau=TAU, grad=True):
    """batchmean tau^2 KL(softmax(t/tau) || softmax(s/tau)) and its gradient w.r.t. s."""
    lq = _log_softmax(s / tau, axis)
    lp = _log_softmax(t / tau, axis)
    p = np.exp(lp)
    n = s.size // s.shape[axis]
    loss = tau * tau * (p * (lp - lq)).sum(dtype=np.float64) / n
    if not grad:
        return loss
    return loss, (np.exp(lq) - p) * (tau / n)


def numpy_entropy(x, axis):
    lp = _log_softmax(x, axis)
    p = np.exp(lp)
    h = -(p * lp).sum(axis=axis, keepdims=True)
    n = h.size
    return h.sum(dtype=np.float64) / n, -p * (lp + h) / n


def numpy_focal(x, y, alpha=0.25, gamma=2.0):
    p = 1 / (1 + np.exp(-x))
    ce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    z = p * (1 - y) + (1 - p) * y
    at = alpha * y + (1 - alpha) * (1 - y)
    loss = (at * ce * z ** gamma).mean(dtype=np.float64)
    dz = p * (1 - p) * (1 - 2 * y)
    g = at * ((p - y) * z ** gamma + gamma * ce * z ** (gamma - 1) * dz) / x.size
    return loss, g


def numpy_kl_div(lq, p):
    with np.errstate(divide="ignore", invalid="ignore"):
        xl = np.where(p == 0, 0, p * np.log(p))
    n = lq.shape[0]
    return (xl - p * lq).sum(dtype=np.float64) / n, -p / n


def numpy_top_k(x, t, axis, k):
    xl = np.moveaxis(x, axis, -1)
    top = np.argpartition(-xl, k - 1, axis=-1)[..., :k]
    return float(np.mean((top == t[..., None]).any(-1)))


# ================================================================== peers

def _torch_kl(th, s, t, axis, tau=TAU):
    fn = th.nn.functional
    n = s.numel() // s.shape[axis]
    return fn.kl_div(fn.log_softmax(s / tau, axis), fn.log_softmax(t / tau, axis),
                     log_target=True, reduction="sum") * (tau * tau / n)


def _torch_entropy(th, x, axis):
    fn = th.nn.functional
    return -(fn.softmax(x, axis) * fn.log_softmax(x, axis)).sum(axis).mean()


def _torch_focal(th, x, y, alpha=0.25, gamma=2.0):     # torchvision.ops.sigmoid_focal_loss
    p = th.sigmoid(x)
    ce = th.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** gamma)
    return ((alpha * y + (1 - alpha) * (1 - y)) * loss).mean()


def _jax_kl(s, t, axis, tau=TAU):
    import jax
    import jax.numpy as jnp
    lq = jax.nn.log_softmax(s / tau, axis=axis)
    lp = jax.nn.log_softmax(t / tau, axis=axis)
    n = s.size // s.shape[axis]
    return tau * tau * jnp.sum(jnp.exp(lp) * (lp - lq)) / n


def _jax_entropy(x, axis):
    import jax
    import jax.numpy as jnp
    lp = jax.nn.log_softmax(x, axis=axis)
    return -jnp.mean(jnp.sum(jnp.exp(lp) * lp, axis=axis))


def _jax_focal(x, y):
    import optax
    return optax.losses.sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0).mean()


def _jax_kl_div(lq, p):
    import jax.numpy as jnp
    from jax.scipy.special import xlogy
    return jnp.sum(xlogy(p, p) - p * lq) / lq.shape[0]


def _jax_vg(f, **static):
    def vg(*args):
        import jax
        return jax.value_and_grad(partial(f, **static))(*args)
    return vg


def _jax_top_k(x, t, axis, k):
    import jax
    import jax.numpy as jnp
    xl = jnp.moveaxis(x, axis, -1)
    _, idx = jax.lax.top_k(xl, k)
    return jnp.mean(jnp.any(idx == t[..., None], axis=-1))


# ================================================================== kl_div_logits

def test_kl_div_logits_fused(benchmark, ce, impl):
    s, t, ax = ce.x, ce.g, ce.axis
    run(benchmark, ce, impl, "kl_div_logits+grad",
        fastce=partial(F.kl_div_logits, s, t, temperature=TAU, axis=ax, return_grad=True,
                       out=ce.out),
        numpy=partial(numpy_kl_logits, s, t, ax),
        expected=lambda: numpy_kl_logits(s.astype(np.float64), t.astype(np.float64), ax),
        torch=lambda th: torch_value_and_grad(partial(_torch_kl, th), ce.torch("x"),
                                              ce.torch("g"), ax),
        jax=lambda jx: jax_call(_jax_vg(_jax_kl, axis=ax), ce.jax("x"), ce.jax("g")))


def test_kl_div_logits(benchmark, ce, impl):
    s, t, ax = ce.x, ce.g, ce.axis
    run(benchmark, ce, impl, "kl_div_logits",
        fastce=partial(F.kl_div_logits, s, t, temperature=TAU, axis=ax),
        numpy=partial(numpy_kl_logits, s, t, ax, grad=False),
        expected=lambda: numpy_kl_logits(s.astype(np.float64), t.astype(np.float64), ax,
                                         grad=False),
        torch=lambda th: partial(_torch_kl, th, ce.torch("x"), ce.torch("g"), ax),
        jax=lambda jx: jax_call(_jax_kl, ce.jax("x"), ce.jax("g"), axis=ax))


# ================================================================== entropy

def test_entropy_fused(benchmark, ce, impl):
    x, ax = ce.x, ce.axis
    run(benchmark, ce, impl, "entropy+grad",
        fastce=partial(F.entropy, x, axis=ax, reduction="mean", return_grad=True, out=ce.out),
        numpy=partial(numpy_entropy, x, ax),
        expected=lambda: numpy_entropy(x.astype(np.float64), ax),
        torch=lambda th: torch_value_and_grad(partial(_torch_entropy, th), ce.torch("x"), ax),
        jax=lambda jx: jax_call(_jax_vg(_jax_entropy, axis=ax), ce.jax("x")))


# ================================================================== kl_div (torch's)

def _target_probs(d):
    """softmax of the case's g array (a distribution unrelated to logp), cached with the case."""
    if "div_q" not in d._cache:
        d._cache["div_q"] = np.exp(_log_softmax(d.g, d.axis))
    return d._cache["div_q"]


def test_kl_div_fused(benchmark, ce, impl):
    lq, q = ce.logp, _target_probs(ce)
    run(benchmark, ce, impl, "kl_div+grad",
        fastce=partial(F.kl_div, lq, q, reduction="batchmean", return_grad=True, out=ce.out),
        numpy=partial(numpy_kl_div, lq, q),
        expected=lambda: numpy_kl_div(lq.astype(np.float64), q.astype(np.float64)),
        torch=lambda th: torch_value_and_grad(
            partial(th.nn.functional.kl_div, reduction="batchmean"), ce.torch("logp"),
            th.from_numpy(q)),
        jax=lambda jx: jax_call(_jax_vg(_jax_kl_div), ce.jax("logp"), jx.device_put(q)),
        src=lq)


# ================================================================== sigmoid_focal_loss

def test_sigmoid_focal_loss_fused(benchmark, bce, impl):
    x, y = bce.x, bce.t
    run(benchmark, bce, impl, "sigmoid_focal_loss+grad",
        fastce=partial(F.sigmoid_focal_loss, x, y, reduction="mean", return_grad=True,
                       out=bce.out),
        numpy=partial(numpy_focal, x, y),
        expected=lambda: numpy_focal(x.astype(np.float64), y.astype(np.float64)),
        torch=lambda th: torch_value_and_grad(partial(_torch_focal, th), bce.torch("x"),
                                              bce.torch("t")),
        jax=lambda jx: jax_call(_jax_vg(_jax_focal), bce.jax("x"), bce.jax("t")))


# ================================================================== top-k accuracy

def test_top5_accuracy(benchmark, ce, impl):
    x, t, ax = ce.x, ce.t, ce.axis
    k = min(5, ce.C)
    run(benchmark, ce, impl, "accuracy_top5",
        fastce=partial(F.accuracy, x, t, axis=ax, k=k),
        numpy=partial(numpy_top_k, x, t, ax, k),
        expected=lambda: numpy_top_k(x.astype(np.float64), t, ax, k),
        torch=lambda th: lambda: (th.topk(ce.torch("x"), k, dim=ax).indices
                                  == ce.torch("t").unsqueeze(ax)).any(ax).double().mean().item(),
        jax=lambda jx: jax_call(_jax_top_k, ce.jax("x"), ce.jax("t"), axis=ax, k=k))
