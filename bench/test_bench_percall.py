"""Per-call cost on mini-batch shapes (the trainer's view): the per-call rows of
`python -m fastce bench --percall`, as pytest-benchmark groups "per-call <case>".

float32, the gradient written into a reused out= buffer; the shapes are small already, so quick
mode does not change them.  Implementations come from fastce._bench (the CLI's code):
fastce, numpy (what a user writes), memcpy (the limit: np.copyto, np.max for forward-only) and,
with peers on, torch (eager), torch_compile, jax (jit) and numba (serial @njit: a thread team
costs more than these shapes).  In check mode each result's loss is compared with the float64
reference.
"""
import numpy as np
import pytest

from fastce import _bench
from benchkit import PEERS, assert_close, bench_mode, fastce_threads
from reference import ref_binary_cross_entropy_with_logits, ref_cross_entropy

_IMPL_NAMES = {"fastce": "fastce", "numpy": "NumPy", "memcpy": "limit", "torch": "torch eager",
               "torch_compile": "torch.compile", "jax": "JAX jit", "numba": "numba"}
_CASES = _bench.PERCALL_CASES


def pytest_generate_tests(metafunc):
    # this module's own `pc_impl` (the conftest's `impl` is for module-scoped CaseData)
    if "pc_impl" in metafunc.fixturenames:
        mode = bench_mode(metafunc.config)
        metafunc.parametrize("pc_impl", ["numpy", "fastce", "memcpy"] + mode["peers"])


def _case_id(case):
    """-k friendly: ce_32x10, bce_256, ce_fwd_32x10, ce_object_32x10."""
    mode = {_bench.FUSED: "", _bench.FWD: "_fwd", _bench.OBJECT: "_object"}[case.mode]
    return f"{case.kind}{mode}_{'x'.join(map(str, case.shape))}"


@pytest.fixture(scope="module", params=_CASES, ids=[_case_id(c) for c in _CASES])
def pc_case(request):
    case = request.param
    rng = np.random.default_rng(7)
    x, t = _bench.make_inputs(case.kind, case.shape, np.float32, rng)
    return case, x, t, np.empty_like(x)


def _reference_loss(kind, x, t):
    if kind == "bce":
        return ref_binary_cross_entropy_with_logits(x, t)
    return ref_cross_entropy(x, t)


def test_percall(benchmark, pc_case, pc_impl, request):
    case, x, t, out = pc_case
    name = _IMPL_NAMES[pc_impl]
    label = _bench.percall_label(case)
    benchmark.group = f"per-call {label}"
    benchmark.extra_info.update(impl=pc_impl, function="per-call", case=label,
                                dtype="float32", shape=list(case.shape),
                                fastce_threads=fastce_threads())
    try:
        fn = _bench.build_impl(name, case.kind, case.mode, x, t, out,
                               threads=fastce_threads(), percall=True)
    except _bench.NotApplicable:
        pytest.skip(f"no {name} equivalent of {label}")
    _bench.warm_up(fn, _bench._WARMUP.get(name, 1))
    result = benchmark(fn)
    if pc_impl == "memcpy" or not bench_mode(request.config)["check"]:
        return
    loss, _ = _bench.split_result(result)
    assert_close(np.float64(loss), np.float64(_reference_loss(case.kind, x, t)), np.float32,
                 peer=pc_impl in PEERS, what=f"{pc_impl} {label}")
