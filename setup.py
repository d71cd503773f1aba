"""Build of fastce's Cython extensions.

Environment switches (read at build time):
  FASTCE_NO_OPENMP=1  build serial kernels even when the compiler supports OpenMP
  FASTCE_NATIVE=1     add -march=native (faster on the build machine, not portable)
  FASTCE_SANITIZE=1   build with -fsanitize=address,undefined (see tools/sanitize.sh)
"""
import os
import shutil
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODULES = ["_softmax", "_ce", "_binary", "_threads", "_fastpath"]
KERNEL_HEADERS = ["src/fastce/_simd.h", "src/fastce/_kernels.h", "src/fastce/_kern_body.h"]


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _compiles_with(compiler, flags):
    """Whether a tiny OpenMP program compiles and links with `flags`."""
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "omp_check.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
        compiler.link_executable(objs, os.path.join(tmp, "omp_check"), extra_postargs=flags)
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """Adds optimisation flags and OpenMP when the compiler supports them."""

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        compile_args, link_args = [], []
        if ctype == "unix":
            # -fno-math-errno / -fno-trapping-math let GCC vectorise the select-based math in
            # _simd.h; unlike GCC's fast-math mode they keep inf/NaN semantics.
            compile_args += ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd",
                             "-Wno-unused-function", "-Wno-unreachable-code"]
            if _flag("FASTCE_NATIVE"):
                compile_args.append("-march=native")
            if _flag("FASTCE_SANITIZE"):
                san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
                compile_args += san
                link_args += san
            omp = ["-fopenmp"]
        elif ctype == "msvc":
            compile_args += ["/O2"]
            omp = ["/openmp"]
        else:
            omp = []
        use_omp = bool(omp) and not _flag("FASTCE_NO_OPENMP") and _compiles_with(self.compiler, omp)
        if use_omp:
            compile_args += omp
            link_args += omp if ctype != "msvc" else []
        print(f"fastce: OpenMP {'on' if use_omp else 'off'}; flags {' '.join(compile_args)}")
        self._write_build_info(compile_args, use_omp)
        for ext in self.extensions:
            ext.extra_compile_args = list(compile_args)
            ext.extra_link_args = list(link_args)
        super().build_extensions()

    def _write_build_info(self, compile_args, use_omp):
        """Record the flags for `python -m fastce info` (a generated, untracked module)."""
        text = (f"FLAGS = {' '.join(compile_args + [os.environ.get('CFLAGS', '')]).strip()!r}\n"
                f"OPENMP_AT_BUILD = {use_omp!r}\n")
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
        depends=KERNEL_HEADERS + ["src/fastce/_kernels.pxd", "src/fastce/_buffers.pxi"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in MODULES
]

setup(
    ext_modules=cythonize(extensions, language_level=3,
                          compiler_directives={"boundscheck": False, "wraparound": False}),
    cmdclass={"build_ext": BuildExt},
)
