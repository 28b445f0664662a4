"""The teaching core of tinyalex: every AlexNet layer as a pure forward/backward pair.

Each `*_forward` returns `(out, cache)`; each `*_backward(dout, cache)` returns fresh gradients
and never touches parameters. Modules, in the order the network uses them:

    conv.py      convolution: strided, padded, grouped (im2col + matrix product), and
                 conv_relu_forward, the same with its ReLU fused in
    winograd.py  the fast route conv.py takes for stride-1 layers with 3x3 or 5x5 filters
                 (conv2-5): the same convolution with 2.4-3x fewer multiplications
    relu.py      rectified linear unit
    lrn.py       local response normalisation across channels
    pool.py      max-pooling (overlapping 3x3 / stride 2)
    dropout.py   inverted dropout with an explicit generator
    dense.py     fully connected layer
    loss.py      softmax cross-entropy
    kernels.py   the Numba kernels (im2col, col2im, pool, LRN), fast
    reference.py the same kernels as plain loops that read like the formulas, slow
    buffers.py   where the large output arrays come from: recycled blocks that nothing else
                 uses any more (writing to fresh memory costs as much as some layers' maths)

Numba compile cache: kernels are compiled on first use and cached (`cache=True`) in
`layers/__pycache__`. When that folder cannot be written (a read-only checkout or install),
Numba falls back to a per-user cache directory by itself; set NUMBA_CACHE_DIR to choose the
place explicitly.
"""

import os

# Short OpenBLAS spin-waits, so BLAS threads do not fight the kernels' threads, and no huge
# pages for NumPy's arrays, which made every new process's first step slower (both explained
# in tinyalex/_runtime.py). They only take effect when layers is imported before NumPy.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

from .conv import ConvCache, conv_backward, conv_forward, conv_relu_forward  # noqa: E402
from .dense import DenseCache, dense_backward, dense_forward  # noqa: E402
from .dropout import DropoutCache, dropout_backward, dropout_forward  # noqa: E402
from .loss import softmax_cross_entropy  # noqa: E402
from .lrn import LRNCache, lrn_backward, lrn_forward  # noqa: E402
from .pool import PoolCache, maxpool_backward, maxpool_forward  # noqa: E402
from .relu import ReluCache, relu_backward, relu_forward  # noqa: E402

__all__ = [
    "conv_forward", "conv_backward", "conv_relu_forward", "ConvCache",
    "maxpool_forward", "maxpool_backward", "PoolCache",
    "lrn_forward", "lrn_backward", "LRNCache",
    "dropout_forward", "dropout_backward", "DropoutCache",
    "dense_forward", "dense_backward", "DenseCache",
    "relu_forward", "relu_backward", "ReluCache",
    "softmax_cross_entropy",
]
