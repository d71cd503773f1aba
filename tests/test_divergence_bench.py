"""The bench CLI's divergence rows (`python -m fastce bench`, src/fastce/_bench.py) time the
right computation: every implementation (fastce, NumPy, torch eager, torch.compile, JAX jit /
optax) gives the float64 reference loss and gradient written in tests/test_divergence.py, on
tiny shapes.  No timing is asserted."""
import numpy as np
import pytest
from test_divergence import ref_entropy, ref_focal, ref_kl_div, ref_kl_logits

from fastce import _bench

FUSED, FWD = _bench.FUSED, _bench.FWD
TINY = {"kl_logits": (5, 7), "entropy": (4, 9), "focal": (23,), "kl_div": (5, 7),
        "accuracy": (40, 9)}
FWD_ONLY = {"accuracy"}          # a metric: no gradient row
IMPLS = ["fastce", "NumPy", "torch eager", "torch.compile", "JAX jit"]
MODULE = {"torch eager": "torch", "torch.compile": "torch", "JAX jit": "jax"}


def reference(kind, x, t):
    """(mean loss, gradient of the mean loss) in float64."""
    if kind == "kl_div":                      # batchmean: the sum over rows / rows
        per = ref_kl_div(x, t)
        return per.sum() / x.shape[0], -np.asarray(t, np.float64) / x.shape[0]
    if kind == "accuracy":                    # rank of the target: how many scores beat it
        xt = np.take_along_axis(x, t[:, None], axis=-1)
        return np.mean((x > xt).sum(axis=-1) < _bench.ACC_K), None
    if kind == "kl_logits":
        per, g = ref_kl_logits(x, t, _bench.DIV_TEMPERATURE)
        return per.mean(), g / per.size
    if kind == "entropy":
        per, g = ref_entropy(x)
        return per.mean(), g / per.size
    per = ref_focal(x, t, _bench.FOCAL_ALPHA, _bench.FOCAL_GAMMA)
    h = 1e-6             # the focal reference has no gradient: central differences
    g = (ref_focal(x + h, t, _bench.FOCAL_ALPHA, _bench.FOCAL_GAMMA)
         - ref_focal(x - h, t, _bench.FOCAL_ALPHA, _bench.FOCAL_GAMMA)) / (2 * h)
    return per.mean(), g / per.size


# torch.compile compiles the torch eager function (checked on every kind): one case of it
CASES = [(impl, kind, mode) for impl in IMPLS for kind in TINY for mode in (FUSED, FWD)
         if (impl != "torch.compile" or (kind, mode) in {("kl_logits", FUSED), ("accuracy", FWD)})
         and (mode == FWD or kind not in FWD_ONLY)]


@pytest.mark.parametrize("impl,kind,mode", CASES, ids=[f"{i}-{k}-{m}" for i, k, m in CASES])
def test_div_implementation_matches_reference(rng, impl, kind, mode):
    if impl in MODULE:
        pytest.importorskip(MODULE[impl])
    x, t = _bench.make_inputs(kind, TINY[kind], np.float64, rng)
    out = np.full_like(x, np.nan)
    fn = _bench.build_impl(impl, kind, mode, x, t, out, threads=1)
    loss, grad = _bench.split_result(fn())
    want, gwant = reference(kind, x, t)
    np.testing.assert_allclose(loss, want, rtol=1e-10)
    if mode == FUSED:
        np.testing.assert_allclose(grad, gwant, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("kind", list(TINY))
def test_div_limit_and_labels(rng, kind):
    x, t = _bench.make_inputs(kind, TINY[kind], np.float32, rng)
    out = np.empty_like(x)
    case = next(c for c in _bench.DIV_CASES if c.kind == kind)
    if case.mode == FUSED:
        _bench.build_impl("limit", kind, FUSED, x, t, out)()
        np.testing.assert_array_equal(out, x)
    label = _bench.case_label(kind, case.run_shape(quick=True))
    assert label.startswith({"kl_logits": "kl_div_logits", "entropy": "entropy",
                             "focal": "sigmoid_focal_loss", "kl_div": "kl_div",
                             "accuracy": "accuracy"}[kind])
    assert _bench.case_label(kind, case.run_shape(quick=False)) != label
    assert ((_bench.limit_op(FUSED, kind) == "np.copyto of both input arrays")
            == (kind in ("kl_logits", "kl_div")))


@pytest.mark.parametrize("peer", ["numba", "sklearn"])
def test_div_peers_without_the_loss_are_not_applicable(rng, peer):
    pytest.importorskip(peer)
    x, t = _bench.make_inputs("entropy", TINY["entropy"], np.float32, rng)
    with pytest.raises(_bench.NotApplicable):
        _bench.build_impl(peer, "entropy", FUSED, x, t, np.empty_like(x), threads=1)
