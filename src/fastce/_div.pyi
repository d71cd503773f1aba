# Type stub of the Cython module _div.pyx (kl_div_logits, entropy, focal / kl_div and top-k rank
# kernel drivers; kernels in _k_div.h, dispatched like _ce's).
from typing import Optional

import numpy as np
from numpy.typing import NDArray

_Floats = NDArray[np.floating]

def kl_logits(s: _Floats, t: _Floats, A: int, C: int, B: int, inv_temperature: float,
              temperature: float, loss: NDArray[np.float64], grad: Optional[_Floats],
              gcoef: float, gscale: Optional[NDArray[np.float64]], nthreads: int) -> None: ...
def entropy(x: _Floats, A: int, C: int, B: int, loss: NDArray[np.float64],
            grad: Optional[_Floats], gcoef: float, gscale: Optional[NDArray[np.float64]],
            nthreads: int) -> None: ...
def topk_rank(x: _Floats, target: NDArray[np.int64], A: int, C: int, B: int,
              rank: NDArray[np.int64], nthreads: int) -> None: ...
def elementwise(kind: str, x: _Floats, y: _Floats, chunk: int, loss: Optional[_Floats],
                chunk_sum: NDArray[np.float64], grad: Optional[_Floats], gcoef: float,
                gscale: Optional[_Floats], alpha: float, gamma: float, log_target: bool,
                nthreads: int) -> None: ...
def isa() -> str: ...
