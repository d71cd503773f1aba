"""FASTCE_ISA pins the kernels' instruction set at import (see src/fastce/_isa.h): each forced
path reports itself and computes the same results (to rounding) as the automatic choice."""
import json
import os
import subprocess
import sys

import pytest

import fastce
from fastce import _threads

SNIPPET = r"""
import json, numpy as np, fastce
from fastce import _threads
rng = np.random.default_rng(1)
x = rng.standard_normal((40, 37)); t = rng.integers(0, 37, 40)
xc = rng.standard_normal((3, 5, 70))
out = dict(report=_threads.isa_report(),
           ce=float(fastce.cross_entropy(x, t)),
           ce_cap=float(fastce.cross_entropy(x, t, softcap=2.0)),
           ce_cols=float(fastce.cross_entropy(xc, rng.integers(0, 5, (3, 70)), axis=1)),
           lse=fastce.logsumexp(x).tolist(),
           bce=float(fastce.binary_cross_entropy_with_logits(x, (x > 0).astype(float))),
           kl=float(fastce.kl_div_logits(x, x[::-1].copy(), temperature=1.5)),
           kl_cols=float(fastce.kl_div_logits(xc, xc[::-1].copy(), axis=1)),
           ent=float(fastce.entropy(x, reduction="sum")),
           focal=float(fastce.sigmoid_focal_loss(x, (x > 0).astype(float), reduction="sum")),
           kl_div=float(fastce.kl_div(x, np.abs(x) / 10, reduction="sum")),
           top3=float(fastce.accuracy(x, t, k=3)))
print(json.dumps(out))
"""


def _run(isa):
    env = dict(os.environ)
    env.pop("FASTCE_ISA", None)
    if isa is not None:
        env["FASTCE_ISA"] = isa
    return subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True,
                          env=env, timeout=120)


def _levels():
    order = ["baseline", "avx2", "avx512"]
    best = _threads.isa_report()["best"]
    return order[: order.index(best) + 1] if best in order else []


def test_info_reports_what_the_kernels_run():
    rep = _threads.isa_report()
    assert set(rep["chosen"]) == {"_ce", "_softmax", "_binary", "_div"}
    assert set(rep["chosen"].values()) == {_threads.simd_path()}


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_forced_isa_is_used_and_agrees(isa):
    if "single" in _threads.simd_path():
        pytest.skip("built without runtime dispatch")
    if isa not in _levels():
        pytest.skip(f"this CPU cannot run {isa}")
    forced, auto = _run(isa), _run(None)
    assert forced.returncode == 0, forced.stderr
    f, a = json.loads(forced.stdout), json.loads(auto.stdout)
    assert set(f["report"]["chosen"].values()) == {isa}
    assert f["report"]["requested"] == isa
    for k in ("ce", "ce_cap", "ce_cols", "bce", "kl", "kl_cols", "ent", "focal", "kl_div", "top3"):
        assert abs(f[k] - a[k]) <= 1e-12 * abs(a[k]), k
    assert max(abs(p - q) for p, q in zip(f["lse"], a["lse"])) <= 1e-12


def test_forcing_above_the_cpu_caps_to_the_best():
    r = _run("avx512")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)["report"]
    assert set(rep["chosen"].values()) == {rep["best"]} or "single" in rep["best"]


def test_bad_isa_value_is_refused():
    r = _run("avx9000")
    assert r.returncode != 0
    assert "FASTCE_ISA" in r.stderr and "avx9000" in r.stderr
