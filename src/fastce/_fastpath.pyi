# Types of the Cython module fastce._fastpath (see _fastpath.pyx).
from typing import Any

import numpy as np
from numpy.typing import NDArray

SLOW: object

def pairwise_sum(a: NDArray[np.float64]) -> float: ...
def class_loss(nll: bool, x: Any, target: Any, weight: Any, ignore_index: Any, reduction: Any,
               label_smoothing: Any, axis: Any, z_loss: Any, softcap: Any, return_grad: Any,
               grad_output: Any, out: Any) -> Any: ...
def binary_loss(kind: str, x: Any, target: Any, weight: Any, pos_weight: Any, reduction: Any,
                return_grad: Any, grad_output: Any, out: Any) -> Any: ...
