"""The fast route: the same layers as `layers/`, with the same call signatures and answers,
rewritten for speed. The models run this route by default (`--route fast`); `--route readable`
runs `layers/` itself. Read `layers/` first: it is the definition, and the tests hold every
function here equal to its readable twin, values and gradients.

    conv.py      im2col convolution in chunks with recycled buffers, the bias (and a fused
                 ReLU: conv_relu_forward) added in the pass that lays the product out
    winograd.py  Winograd's minimal filtering for the stride-1 3x3 and 5x5 layers (conv2-5)
    pool.py      max-pooling as threaded Numba kernels
    lrn.py       LRN as fused Numba kernels, one pass each way
    dense.py     the dense products written into recycled buffers
    kernels.py   the Numba kernels, threaded (each has a plain-loop twin in layers/reference.py)
    buffers.py   the pool of recycled large arrays

The process settings that help this route (BLAS spin-waits, huge pages, malloc) are in
`tinyalex/_runtime.py`; the entry points apply them, importing never does.

ReLU, dropout and the loss have no fast version: the readable ones are already a single
NumPy pass; they are re-exported here so that a model can take all its layers from one route.
"""

from ..dropout import DropoutCache, dropout_backward, dropout_forward
from ..loss import softmax, softmax_cross_entropy
from ..relu import ReluCache, relu_backward, relu_forward
from .conv import ConvCache, conv_backward, conv_forward, conv_relu_forward
from .dense import DenseCache, dense_backward, dense_forward
from .threads import get_num_threads, set_num_threads
from .lrn import LRNCache, lrn_backward, lrn_forward
from .pool import PoolCache, maxpool_backward, maxpool_forward

__all__ = [
    "conv_forward", "conv_backward", "conv_relu_forward", "ConvCache",
    "maxpool_forward", "maxpool_backward", "PoolCache",
    "lrn_forward", "lrn_backward", "LRNCache",
    "dropout_forward", "dropout_backward", "DropoutCache",
    "dense_forward", "dense_backward", "DenseCache",
    "relu_forward", "relu_backward", "ReluCache",
    "softmax_cross_entropy", "softmax", "set_num_threads", "get_num_threads",
]
