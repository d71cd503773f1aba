# Pointer access for the kernel drivers.  The Python layer (_validate.py) has already checked
# dtype, contiguity and sizes; these checks are a second, cheap line of defence so that a
# mistake there raises instead of reading out of bounds.  Also: the kernels' dtype code of an
# array, and this module's instruction-set resolution (each extension module resolves once at
# import, see _isa.h).
cimport numpy as cnp

cnp.import_array()

cdef char _EMPTY = 0

cdef inline void *_ptr(object arr, int typenum, Py_ssize_t size, bint writable) except NULL:
    cdef cnp.ndarray a
    if arr is None:
        raise TypeError("internal: missing buffer")
    a = <cnp.ndarray?>arr
    if cnp.PyArray_TYPE(a) != typenum or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise TypeError("internal: kernel buffer has the wrong dtype or layout")
    if cnp.PyArray_SIZE(a) != size:
        raise ValueError("internal: kernel buffer has the wrong size")
    if writable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError("internal: kernel output is read-only")
    if size == 0:
        return <void *>&_EMPTY   # never dereferenced: no work item touches an empty buffer
    return cnp.PyArray_DATA(a)

cdef inline void *_optr(object arr, int typenum, Py_ssize_t size, bint writable) except? NULL:
    if arr is None:
        return NULL
    return _ptr(arr, typenum, size, writable)

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
