# For the modules built on _kernels.h (after `from ._kernels cimport *`): the kernels' dtype
# code of an array, and this module's instruction-set resolution (each extension module
# resolves once at import, see _isa.h).

cdef inline int _dtype_code(object x, int *typenum) except -1:
    """FCE_F32 or FCE_F64 for the logits array x (its NumPy type number in *typenum)."""
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray?>x)
    if t == cnp.NPY_FLOAT32:
        typenum[0] = t
        return FCE_F32
    if t == cnp.NPY_FLOAT64:
        typenum[0] = t
        return FCE_F64
    raise TypeError("internal: kernel input must be float32 or float64")


def _resolve_isa():
    if fce_isa_request() == -2:
        import os
        raise ValueError(f"FASTCE_ISA={os.environ.get('FASTCE_ISA')!r} is not one of "
                         "'baseline', 'avx2', 'avx512', 'auto'")
    return fce_isa_chosen().decode()


fce_isa_init()
_resolve_isa()


def isa():
    """The instruction set this module's kernels run with (chosen at import; FASTCE_ISA)."""
    return fce_isa_chosen().decode()
