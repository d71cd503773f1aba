"""setup.py's compiler decisions (docs/building.md): compiler identification and OpenMP flags
per compiler.  Needs the build requirements (Cython, setuptools) and a C compiler; skipped where
they are missing (e.g. a wheel-only venv)."""
import importlib.util
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP = os.path.join(ROOT, "setup.py")
pytest.importorskip("Cython")
pytest.importorskip("setuptools")
if not os.path.exists(SETUP):
    pytest.skip("setup.py is not next to tests/", allow_module_level=True)


@pytest.fixture(scope="module")
def setup_py():
    spec = importlib.util.spec_from_file_location("fastce_setup", SETUP)
    mod = importlib.util.module_from_spec(spec)
    cwd = os.getcwd()
    os.chdir(ROOT)               # setup.py names its sources relative to the project root
    try:
        spec.loader.exec_module(mod)   # defines everything, builds nothing (not __main__)
    finally:
        os.chdir(cwd)
    return mod


def _compiler(cc):
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed")
    old = os.environ.get("CC")
    os.environ["CC"] = cc
    try:
        comp = new_compiler()
        customize_compiler(comp)
    finally:
        if old is None:
            os.environ.pop("CC")
        else:
            os.environ["CC"] = old
    return comp


@pytest.mark.parametrize("cc,name", [("gcc", "gcc"), ("clang", "clang")])
def test_compiler_is_identified_from_its_macros(setup_py, cc, name):
    comp = _compiler(cc)
    ident = setup_py._compiler_identity(comp)
    assert ident.split()[0] == name
    version = subprocess.run([cc, "-dumpversion"], capture_output=True, text=True).stdout
    assert ident.split()[1] == version.strip().split(".")[0]


def test_openmp_flag_order_per_compiler(setup_py):
    assert setup_py._openmp_candidates("gcc 12") == [(["-fopenmp"], ["-fopenmp"])]
    clang = setup_py._openmp_candidates("clang 14")
    assert clang[0] == (["-fopenmp"], ["-fopenmp"])
    assert (["-fopenmp=libomp"], ["-fopenmp=libomp"]) in clang
    apple = setup_py._openmp_candidates("apple-clang 15")
    assert any(c[:2] == ["-Xpreprocessor", "-fopenmp"] and "-lomp" in l for c, l in apple)
    # MSVC: the SIMD-capable flag first, plain OpenMP 2.0 as the fallback
    assert setup_py._openmp_candidates("msvc") == [(["/openmp:experimental"], []), (["/openmp"], [])]


def test_probe_can_fail(setup_py):
    comp = _compiler("gcc")
    assert setup_py._probe(comp, "int main(void) { return 0; }\n", run=True)
    assert not setup_py._probe(comp, "int main(void) { return 1; }\n", run=True)
    assert not setup_py._probe(comp, "this is not C\n")


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_openmp_found_and_runs(setup_py, cc):
    comp = _compiler(cc)
    flags = setup_py._openmp_flags(comp, setup_py._compiler_identity(comp))
    if cc == "clang" and flags is None:
        pytest.skip("clang without libomp (apt-get install libomp-dev)")
    assert flags is not None
