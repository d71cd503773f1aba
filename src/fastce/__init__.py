"""fastce: fast, accurate cross-entropy losses and their gradients for NumPy on the CPU.

Stable log_softmax / softmax / logsumexp, cross-entropy from logits (class-index or probability
targets), NLL, binary cross-entropy from logits and from probabilities, their gradients and
fused loss+gradient, with torch.nn.functional semantics.
"""
from ._parallel import get_num_threads
from ._threads import OPENMP
from .divergence import (
    entropy,
    entropy_grad,
    kl_div,
    kl_div_grad,
    kl_div_logits,
    kl_div_logits_grad,
    sigmoid_focal_loss,
    sigmoid_focal_loss_grad,
)
from .losses import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, NLLLoss
from .functional import (
    accuracy,
    binary_cross_entropy,
    binary_cross_entropy_grad,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_grad,
    categorical_cross_entropy,
    cross_entropy,
    cross_entropy_grad,
    linear_cross_entropy,
    log_softmax,
    log_softmax_vjp,
    logsumexp,
    nll_loss,
    nll_loss_grad,
    softmax,
    softmax_vjp,
)

__version__ = "0.1.0"

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "NLLLoss",
    "accuracy",
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "categorical_cross_entropy",
    "cross_entropy",
    "cross_entropy_grad",
    "entropy",
    "entropy_grad",
    "get_num_threads",
    "kl_div",
    "kl_div_grad",
    "kl_div_logits",
    "kl_div_logits_grad",
    "linear_cross_entropy",
    "log_softmax",
    "log_softmax_vjp",
    "logsumexp",
    "nll_loss",
    "nll_loss_grad",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_grad",
    "softmax",
    "softmax_vjp",
    "OPENMP",
    "__version__",
]
