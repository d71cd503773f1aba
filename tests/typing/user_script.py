"""A user's annotated script: `mypy --strict` must accept it and infer the types asserted here
(tests/test_typing.py).  It also runs, so every call in it is a real one."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Tuple

import numpy as np
from numpy.typing import NDArray

import fastce
from fastce.functional import Reduction

if TYPE_CHECKING:
    from typing_extensions import assert_type
else:
    def assert_type(value: object, _type: object) -> object:
        return value

x32 = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
x64 = x32.astype(np.float64)
t = np.arange(8) % 5

# dtype follows the input: float32 in, float32 out
assert_type(fastce.log_softmax(x32), NDArray[np.float32])
assert_type(fastce.softmax(x64, axis=1), NDArray[np.float64])
assert_type(fastce.cross_entropy_grad(x32, t), NDArray[np.float32])
assert_type(fastce.log_softmax([[1.0, 2.0]]), NDArray[np.floating[Any]])

# return_grad=True returns a (loss, grad) pair; the default returns a scalar
loss, grad = fastce.cross_entropy(x32, t, return_grad=True)
assert_type(grad, NDArray[np.float32])
assert_type(fastce.cross_entropy(x32, t), np.floating[Any])
value: float = float(fastce.cross_entropy(x32, t, label_smoothing=0.1))
per_sample = fastce.cross_entropy(x64, t, reduction="none")
assert_type(per_sample, NDArray[np.floating[Any]])
print(per_sample.shape, value, float(loss))

# the first argument is `input` everywhere, as in torch.nn.functional
fastce.cross_entropy(input=x32, target=t)
fastce.nll_loss(input=fastce.log_softmax(x64), target=t)
fastce.binary_cross_entropy_with_logits(input=x32, target=(x32 > 0).astype(np.float32))

# a reduction chosen at run time is fine when typed as fastce's Reduction
red: Reduction = "sum"
total = fastce.binary_cross_entropy(np.full(3, 0.5), np.ones(3), reduction=red)
print(total)

# loss objects: the loss type follows the reduction given to the constructor
crit = fastce.CrossEntropyLoss(label_smoothing=0.1)
assert_type(crit(x32, t), np.floating[Any])
grad_obj: NDArray[np.floating[Any]] = crit.backward()
crit_none = fastce.CrossEntropyLoss(reduction="none")
assert_type(crit_none(x32, t), NDArray[np.floating[Any]])
print(crit_none.backward(np.ones(8)).shape, grad_obj.dtype)

# linear_cross_entropy: three gradients without a bias, four with one
W = np.ones((5, 3), dtype=np.float32)
h = np.ones((8, 3), dtype=np.float32)
lce = fastce.linear_cross_entropy(h, W, t, return_grad=True)
assert_type(lce, Tuple[fastce.functional.Loss, NDArray[np.floating[Any]], NDArray[np.floating[Any]]])
l4, g_h, g_W, g_b = fastce.linear_cross_entropy(h, W, t, linear_bias=np.zeros(5), return_grad=True)
print(float(fastce.accuracy(x32, t)), g_b.shape)
