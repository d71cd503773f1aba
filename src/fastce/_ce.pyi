# Type stub of the Cython module _ce.pyx (the cross-entropy / NLL kernel drivers).
# Checked against the compiled module by tests/test_typing.py (mypy.stubtest): a changed
# signature in the .pyx fails that test until this file follows.
from typing import Any, Optional

import numpy as np
from numpy.typing import NDArray

_Floats = NDArray[np.floating[Any]]   # C-contiguous, flat, validated by fastce._validate

def cross_entropy_index(x: _Floats, target: NDArray[np.int64], weight: Optional[NDArray[np.float64]],
                        weight_sum: float, ignore_index: int, label_smoothing: float, A: int,
                        C: int, B: int, loss: Optional[NDArray[np.float64]],
                        grad: Optional[_Floats], gcoef: float,
                        gscale: Optional[NDArray[np.float64]], nthreads: int, nll: bool = False,
                        z_loss: float = 0.0, softcap: float = 0.0,
                        item_sum: Optional[NDArray[np.float64]] = None) -> None: ...
def n_items(A: int, C: int, B: int) -> int: ...
def cross_entropy_prob(x: _Floats, q: _Floats, weight: Optional[NDArray[np.float64]],
                       label_smoothing: float, A: int, C: int, B: int, loss: NDArray[np.float64],
                       grad: Optional[_Floats], gcoef: float, gscale: Optional[NDArray[np.float64]],
                       nthreads: int, z_loss: float = 0.0, softcap: float = 0.0) -> None: ...

def isa() -> str: ...
