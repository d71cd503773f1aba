"""The kernel paths of the class-axis ops, as (logits shape, axis) cases.

Every CE/NLL/row-op kernel decodes its work into one of three item kinds (see _kernels.h):
ROW (axis=-1, C > 16: one contiguous row), BLOCK (axis=-1, C <= 16: up to 64 short rows
transposed into columns) and COLS (axis=1 layouts, a tile of up to 64 columns).  Each case below
pins one path and its boundaries, so a parity or finite-difference test parametrised over
KERNEL_PATHS reaches every one of them.  Softcap is an option crossed with these (it has its own
specialised kernels on every path).
"""
import numpy as np
import pytest

# name -> (shape, axis)
KERNEL_PATHS = {
    "row": ((5, 37), -1),              # C > 16: row kernel, 16-lane body + scalar tail
    "row-exact-lanes": ((3, 32), -1),  # no scalar tail
    "row-groups": ((3, 301), -1),      # several float32 lane groups (FCE_ROW_GROUP vectors) + tail
    "block": ((7, 5), -1),             # one short-row block
    "multi-block": ((150, 3), -1),     # 64 + 64 + 22 rows
    "c2": ((9, 2), -1),                # binary classification as 2 classes (closed form)
    "c2-multi-block": ((150, 2), -1),  # the closed form over blocks of 64 + 64 + 22 rows
    "c16": ((5, 16), -1),              # the largest block class count
    "column": ((3, 4, 5), 1),          # axis=1, one tile per a-slab
    "multi-tile": ((2, 3, 150), 1),    # axis=1, tiles of 64 + 64 + 22 columns
    "column-wide": ((2, 20, 3), 1),    # axis=1 with many classes
}
PATH_IDS = list(KERNEL_PATHS)


def path_params():
    return pytest.mark.parametrize("path", PATH_IDS)


def path_case(path):
    shape, axis = KERNEL_PATHS[path]
    return shape, axis, shape[axis]


def samples_shape(shape, axis):
    s = list(shape)
    del s[axis]
    return tuple(s)


def class_last(a, axis):
    return np.moveaxis(np.asarray(a), axis, -1)
