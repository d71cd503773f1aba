"""Build of fastce's Cython extensions.

Environment switches (read at build time):
  FASTCE_NO_OPENMP=1  build serial kernels even when the compiler supports OpenMP
  FASTCE_NATIVE=1     add -march=native (faster on the build machine, not portable)
  FASTCE_SANITIZE=1   build with -fsanitize=address,undefined (see tools/sanitize.sh)
  FASTCE_OPENMP_PREFIX=DIR  where an LLVM libomp is installed (DIR/include, DIR/lib); on macOS
                      `brew --prefix libomp` is asked when this is unset
  CC=clang            any C compiler works; see docs/building.md for what each one gets
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODULES = ["_softmax", "_ce", "_binary", "_threads", "_fastpath", "_div"]
# Kernel families each module compiles (FCE_FAMILIES in _kernels.h: 1 row ops, 2 CE/NLL,
# 4 binary losses, 8 KL / entropy / focal / top-k); _threads includes only the ISA resolver,
# _fastpath the argument structs only (it calls the _ce / _binary drivers through their .pxd).
FAMILIES = {"_softmax": 1, "_ce": 2, "_binary": 4, "_fastpath": 0, "_div": 8}
KERNEL_HEADERS = [f"src/fastce/{h}" for h in (
    "_simd.h", "_isa.h", "_kernels.h", "_kern_inst.h", "_kern_body.h", "_k_layout.h",
    "_k_reduce.h", "_k_rowops.h", "_k_ce.h", "_k_check.h", "_k_binary.h", "_k_div.h")]


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# ------------------------------------------------------------------ compiler probes
# Every decision below is made by compiling (and where it matters, running) a tiny program with
# the compiler that will build the extensions, not by guessing from its name or version: a
# probe answers for that exact compiler, its flags (CC, CFLAGS, LDFLAGS) and its C library.
# The reasoning per compiler is in docs/building.md.

OMP_PROGRAM = "#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n"


def _probe(compiler, source, compile_args=(), link_args=(), run=False):
    """Whether `source` compiles and links with the given flags (and exits 0, if `run`)."""
    tmp = tempfile.mkdtemp(prefix="fastce-probe-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        exe = os.path.join(tmp, "probe")
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=list(compile_args))
        compiler.link_executable(objs, exe, extra_postargs=list(link_args))
        if run:
            exe_path = exe + (".exe" if sys.platform == "win32" else "")
            return subprocess.run([exe_path], capture_output=True, timeout=60).returncode == 0
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _compiler_identity(compiler):
    """'gcc 12', 'clang 14', 'apple-clang 15', 'msvc' or 'unknown', for choices and the log.

    Read from the compiler's predefined macros (`cc -dM -E`): `cc` may be either compiler,
    and clang also defines __GNUC__ (as 4), so the order of the checks matters."""
    if compiler.compiler_type == "msvc":
        return "msvc"
    cc = getattr(compiler, "compiler_so", None) or getattr(compiler, "compiler", None)
    if not cc:
        return "unknown"
    try:
        out = subprocess.run([*cc[:1], "-dM", "-E", "-x", "c", os.devnull], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    macros = dict(re.match(r"#define (\S+) ?(.*)", line).groups()
                  for line in out.splitlines() if line.startswith("#define "))
    if "__clang__" in macros:
        name = "apple-clang" if "__apple_build_version__" in macros else "clang"
        return f"{name} {macros.get('__clang_major__', '?')}"
    if "__GNUC__" in macros:
        return f"gcc {macros['__GNUC__']}"
    return "unknown"


def _libomp_prefix():
    """Where a separately installed LLVM libomp lives (macOS: Homebrew's keg-only libomp).

    FASTCE_OPENMP_PREFIX wins; otherwise `brew --prefix libomp` when brew exists."""
    prefix = os.environ.get("FASTCE_OPENMP_PREFIX")
    if prefix:
        return prefix
    if sys.platform == "darwin" and shutil.which("brew"):
        try:
            out = subprocess.run(["brew", "--prefix", "libomp"], capture_output=True, text=True,
                                 timeout=60)
            if out.returncode == 0 and os.path.isdir(out.stdout.strip()):
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def _openmp_candidates(identity):
    """(compile args, link args) to try in order, for this compiler.

    - GCC: -fopenmp (libgomp).
    - clang (Linux, LLVM): -fopenmp uses the runtime clang was configured with (libomp on
      Debian/Ubuntu/LLVM builds); -fopenmp=libomp names it explicitly; the last try adds -lomp
      for installs where the driver does not link the runtime by itself.
    - Apple clang rejects -fopenmp; it accepts `-Xpreprocessor -fopenmp` (the front end handles
      the pragmas) and links Homebrew's libomp with -lomp.
    - MSVC: /openmp:experimental (VS 2019+) is OpenMP 2.0 *plus* `#pragma omp simd`, on the
      redistributable vcomp runtime; plain /openmp ignores `omp simd` (the loops then rely on
      MSVC's own auto-vectoriser).  /openmp:llvm is not used: its libomp DLLs are not
      redistributable.
    """
    if identity == "msvc":
        return [(["/openmp:experimental"], []), (["/openmp"], [])]
    prefix = _libomp_prefix()
    inc = [f"-I{os.path.join(prefix, 'include')}"] if prefix else []
    lib = [f"-L{os.path.join(prefix, 'lib')}"] if prefix else []
    if identity.startswith("gcc"):
        return [(["-fopenmp"], ["-fopenmp"])]
    cands = [(["-fopenmp"], ["-fopenmp"]),
             (["-fopenmp=libomp"], ["-fopenmp=libomp"]),
             (["-fopenmp"] + inc, ["-fopenmp"] + lib + ["-lomp"])]
    if identity.startswith("apple-clang") or sys.platform == "darwin":
        cands.append((["-Xpreprocessor", "-fopenmp"] + inc, lib + ["-lomp"]))
    return cands


def _openmp_flags(compiler, identity):
    """The first OpenMP flag set whose probe program builds (and runs), or None."""
    for compile_args, link_args in _openmp_candidates(identity):
        # run=True: a libomp found at link time but not at run time (no rpath) is no use
        if _probe(compiler, OMP_PROGRAM, compile_args, link_args, run=not _cross_compiling()):
            return compile_args, link_args
    return None


def _cross_compiling():
    """macOS universal2 / cross-arch builds: probe programs cannot run here."""
    archflags = os.environ.get("ARCHFLAGS", "")
    return sys.platform == "darwin" and archflags.count("-arch") > 1


class BuildExt(build_ext):
    """Adds optimisation flags and OpenMP when the compiler supports them."""

    def finalize_options(self):
        # The extensions compile in parallel unless asked otherwise (-j N, or FASTCE_BUILD_JOBS):
        # every module instantiates the kernels for three ISAs, and one after another they took
        # 5 minutes on a 2 GHz 2-core machine, four times per CI run.
        super().finalize_options()
        if not self.parallel:
            jobs = os.environ.get("FASTCE_BUILD_JOBS", "")
            self.parallel = int(jobs) if jobs.isdigit() else (os.cpu_count() or 1)

    def build_extensions(self):
        identity = _compiler_identity(self.compiler)
        compile_args, link_args, macros = [], [], []
        if identity == "msvc":
            # /fp:precise is MSVC's default: IEEE inf/NaN semantics kept, like GCC below.
            compile_args += ["/O2"]
        elif self.compiler.compiler_type == "unix":
            # -fno-math-errno / -fno-trapping-math let GCC and clang vectorise the select-based
            # math in _simd.h; unlike the compilers' fast-math modes they keep inf/NaN semantics.
            # -ffp-contract=off: no implicit FMA contraction, so every kernel specialisation
            # (gradient or not, vector body or scalar tail) rounds each expression the same way:
            # the loss is bitwise identical with and without return_grad.  The AVX2/AVX-512
            # kernels still get fused multiply-adds where they pay (the polynomials of _simd.h),
            # written out explicitly, so they are the same in every specialisation of a variant.
            compile_args += ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd",
                             "-ffp-contract=off",
                             "-Wno-unused-function", "-Wno-unreachable-code"]
            if identity.startswith("gcc") and not _flag("FASTCE_SANITIZE"):
                # GCC does not schedule instructions before register allocation on x86 (it is
                # off by default there).  Our kernels' lane loops are fully unrolled vector
                # loops whose copies GCC then emits one after another: each vector's exp/log
                # polynomial is a dependent chain of ~100 cycles, and on a core whose reorder
                # window holds about one copy (Zen 1 splits every 256-bit op in two) the copies
                # barely overlap.  The first scheduling pass interleaves them.  Not for the
                # sanitizer build, which is for finding memory errors, not speed (nor its
                # register-pressure regions, FCE_NO_SCHED in _kernels.h): 232 -> 215 s of that
                # build on a Zen 1 core, the rest is the instrumentation.
                compile_args.append("-fschedule-insns")
            if _flag("FASTCE_NATIVE"):
                compile_args.append("-march=native")
            if _flag("FASTCE_SANITIZE"):
                # -O2: the omp simd loops (what the sanitizers should see) still vectorise, and
                # the instrumented build compiles in two thirds of -O3's time (_ce.c: 127 s
                # against 182 s on a Zen 1 core), a minute and a half of CI.
                san = ["-O2", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
                compile_args += san
                link_args += san
                macros.append(("FCE_NO_SCHED", "1"))
        omp = None
        if not _flag("FASTCE_NO_OPENMP"):
            omp = _openmp_flags(self.compiler, identity)
        if omp is not None:
            compile_args += omp[0]
            link_args += omp[1]
        print(f"fastce: compiler {identity}; OpenMP {'on' if omp else 'off'}; "
              f"flags {' '.join(compile_args)}")
        self._write_build_info(compile_args, omp is not None, identity)
        for ext in self.extensions:
            ext.extra_compile_args = list(compile_args)
            ext.extra_link_args = list(link_args)
            ext.define_macros = list(ext.define_macros) + macros
        super().build_extensions()

    def _write_build_info(self, compile_args, use_omp, identity):
        """Record the flags for `python -m fastce info` (a generated, untracked module)."""
        text = (f"FLAGS = {' '.join(compile_args + [os.environ.get('CFLAGS', '')]).strip()!r}\n"
                f"OPENMP_AT_BUILD = {use_omp!r}\n"
                f"COMPILER = {identity!r}\n")
        targets = [os.path.join("src", "fastce", "_build_info.py")]
        if not self.inplace:
            targets.append(os.path.join(self.build_lib, "fastce", "_build_info.py"))
        for path in targets:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)


extensions = [
    Extension(
        f"fastce.{name}",
        [f"src/fastce/{name}.pyx"],
        include_dirs=[np.get_include(), "src/fastce"],
        depends=KERNEL_HEADERS + ["src/fastce/_kernels.pxd", "src/fastce/_ce.pxd",
                                  "src/fastce/_binary.pxd", "src/fastce/_buffers.pxi",
                                  "src/fastce/_dispatch.pxi"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
        + ([("FCE_FAMILIES", str(FAMILIES[name]))] if name in FAMILIES else []),
    )
    for name in MODULES
]

if __name__ == "__main__":   # (setuptools runs this file as __main__; tests import it)
    setup(
        ext_modules=cythonize(extensions, language_level=3,
                              compiler_directives={"boundscheck": False, "wraparound": False}),
        cmdclass={"build_ext": BuildExt},
    )
