# Pointer access for the kernel drivers.  The Python layer (_validate.py) has already checked
# dtype, contiguity and sizes; these checks are a second, cheap line of defence so that a
# mistake there raises instead of reading out of bounds.
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
