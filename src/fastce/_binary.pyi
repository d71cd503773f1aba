# Type stub of the Cython module _binary.pyx (binary cross-entropy kernel driver); checked
# against the compiled module by tests/test_typing.py (mypy.stubtest).
from typing import Any, Literal, Optional

import numpy as np
from numpy.typing import NDArray

_Floats = NDArray[np.floating[Any]]

def binary(kind: Literal["logits", "probs"], x: _Floats, y: _Floats, w: Optional[_Floats],
           pw: Optional[_Floats], K: int, rows_per_chunk: int, loss: Optional[_Floats],
           chunk_sum: NDArray[np.float64], grad: Optional[_Floats], gcoef: float,
           gscale: Optional[_Floats], nthreads: int) -> None: ...

def first_outside_unit(p: _Floats, nthreads: int) -> int: ...

def isa() -> str: ...
