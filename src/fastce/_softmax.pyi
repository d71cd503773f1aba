# Type stub of the Cython module _softmax.pyx (row-operation kernel drivers); checked against
# the compiled module by tests/test_typing.py (mypy.stubtest).
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

_Floats = NDArray[np.floating[Any]]
_Kind = Literal["log_softmax", "softmax"]

def logsumexp(x: _Floats, A: int, C: int, B: int, out: _Floats, nthreads: int) -> None: ...
def rowwise(kind: _Kind, x: _Floats, A: int, C: int, B: int, out: _Floats, nthreads: int) -> None: ...
def vjp(kind: _Kind, y: _Floats, g: _Floats, A: int, C: int, B: int, out: _Floats,
        nthreads: int) -> None: ...

def isa() -> str: ...
