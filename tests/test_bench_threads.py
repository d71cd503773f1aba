"""The bench CLI's torch rows leave the process's OpenMP thread count as they found it.

torch shares libgomp with fastce, so torch.set_num_threads is omp_set_num_threads: a torch row
built for another thread count used to change fastce.get_num_threads() for every later row of
the same process (and for fastce timed in the same row)."""
import numpy as np
import pytest

import fastce
from fastce import _bench


@pytest.mark.parametrize("impl", ["torch eager", "torch.compile"])
def test_torch_row_restores_the_thread_count(rng, impl):
    torch = pytest.importorskip("torch")
    before = fastce.get_num_threads()
    x, t = _bench.make_inputs("ce", (6, 5), np.float64, rng)
    # another count than the process's (more threads than now: never clipped to 1)
    fn = _bench.build_impl(impl, "ce", _bench.FUSED, x, t, np.empty_like(x),
                           threads=before + 1)
    assert fastce.get_num_threads() == before
    seen = []
    real = torch.nn.functional.cross_entropy

    def spy(*a, **k):
        seen.append(torch.get_num_threads())           # torch's count inside the row's call
        return real(*a, **k)

    if impl == "torch eager":
        torch.nn.functional.cross_entropy = spy
    try:
        loss, _ = _bench.split_result(fn())
    finally:
        torch.nn.functional.cross_entropy = real
    assert fastce.get_num_threads() == before
    if impl == "torch eager":
        assert seen == [before + 1]
    np.testing.assert_allclose(loss, fastce.cross_entropy(x, t), rtol=1e-12)


def test_bench_rows_with_torch_keep_the_thread_count():
    pytest.importorskip("torch")
    before = fastce.get_num_threads()
    case = _bench.Case("ce", _bench.FUSED, (8, 5), (8, 5))
    rows = _bench.run_cases(quick=True, peers=["torch eager"], repeats=1, cases=[case])
    assert rows and fastce.get_num_threads() == before
