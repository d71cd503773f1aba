"""Mistakes a type checker must catch (tests/test_typing.py expects an error on, and only on,
every line marked `# E`).  Never run."""
import numpy as np

import fastce

x = np.zeros((4, 3))
t = np.zeros(4, dtype=np.int64)

fastce.cross_entropy(x, t, reduction="avg")  # E
loss, grad = fastce.cross_entropy(x, t)  # E
fastce.cross_entropy(x, t, out=np.empty_like(x))  # E
fastce.CrossEntropyLoss(reduction="average")  # E
fastce.cross_entropy(logits=x, target=t)  # E
float(fastce.cross_entropy(x, t, reduction="none", return_grad=True))  # E
reduction: str = "mean"
fastce.nll_loss(x, t, reduction=reduction)  # E
