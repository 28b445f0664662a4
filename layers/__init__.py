"""The teaching core of tinyalex: every AlexNet layer as a pure forward/backward pair.

Each `*_forward` returns `(out, cache)`; each `*_backward(dout, cache)` returns fresh gradients
and never touches parameters. Read them in the order the network uses them:

    conv.py       convolution: strided, padded, grouped: im2col + one matrix product per group
    relu.py       rectified linear unit
    lrn.py        local response normalisation across channels
    pool.py       max-pooling (overlapping 3x3 / stride 2)
    dropout.py    inverted dropout with an explicit generator
    dense.py      fully connected layer
    loss.py       softmax cross-entropy (and the softmax alone, for scoring)
    im2col.py     the two Numba kernels under conv.py (im2col and its adjoint col2im)
    reference.py  every layer's maths as plain loops that read like the formulas (slow)

These are the definition. A second route, `layers/fast/`, computes the same with the same
signatures, rewritten for speed (Winograd, fused kernels, threads, recycled buffers); the
models run it by default and the tests hold it equal to this one. Importing either changes
nothing in the process: no environment variables, no malloc settings.

Numba compile cache: kernels are compiled on first use and cached (`cache=True`) in
`layers/__pycache__` and `layers/fast/__pycache__`. When those cannot be written (a read-only
install), Numba falls back to a per-user cache directory by itself; NUMBA_CACHE_DIR chooses
the place explicitly.
"""

from .conv import ConvCache, conv_backward, conv_forward
from .dense import DenseCache, dense_backward, dense_forward
from .dropout import DropoutCache, dropout_backward, dropout_forward
from .loss import softmax, softmax_cross_entropy
from .lrn import LRNCache, lrn_backward, lrn_forward
from .pool import PoolCache, maxpool_backward, maxpool_forward
from .relu import ReluCache, relu_backward, relu_forward

__all__ = [
    "conv_forward", "conv_backward", "ConvCache",
    "maxpool_forward", "maxpool_backward", "PoolCache",
    "lrn_forward", "lrn_backward", "LRNCache",
    "dropout_forward", "dropout_backward", "DropoutCache",
    "dense_forward", "dense_backward", "DenseCache",
    "relu_forward", "relu_backward", "ReluCache",
    "softmax_cross_entropy", "softmax",
]
