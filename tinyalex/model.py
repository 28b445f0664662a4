"""The AlexNet models, assembled from the layers in `layers/`.

Both models keep the paper's eight weight layers and its two-tower ("two GPU") split, done with
grouped convolutions: conv2, conv4 and conv5 have groups=2 (each half of the filters sees only
its own tower's half of the channels), while conv3 and the dense layers see both towers.

    paper (3x224x224)                                  cifar (3x32x32)
    conv1 96 11x11/4 pad 2 -> 55x55 ReLU LRN pool 27   conv1 96 3x3/1 pad 1 -> 32x32 ReLU LRN pool 15
    conv2 256 5x5 g2 pad 2 -> 27x27 ReLU LRN pool 13   conv2 256 5x5 g2 pad 2 -> 15x15 ReLU LRN pool 7
    conv3 384 3x3 pad 1 ReLU                           same
    conv4 384 3x3 g2 pad 1 ReLU                        same
    conv5 256 3x3 g2 pad 1 ReLU pool -> 6x6 (9216)     same, pool -> 3x3 (2304)
    fc6   dropout 0.5, 9216 -> 4096, ReLU              dropout, 2304 -> 4096, ReLU
    fc7   dropout 0.5, 4096 -> 4096, ReLU              same
    fc8   4096 -> classes, softmax cross-entropy       same

Pools are the paper's overlapping 3x3 windows with stride 2; LRN uses the paper's constants
(k=2, n=5, alpha=1e-4, beta=0.75, alpha multiplying the sum). `tiny` is the same topology
shrunk to a few channels (3x32x32 input, 144 features into fc6, 32 hidden units), for
gradient checks and fast end-to-end tests.

The model holds the parameters in a dict keyed "conv1.w", "conv1.b", ..., "fc8.b" (PyTorch's
layouts: conv (F, C/groups, KH, KW), dense (out, in)); `loss` returns gradients with the same
keys, and an optimizer loops over them. Nothing here updates a parameter.

`layer_plan(arch)` lists the layers in order; the model walks it (forward_tape, backward_tape),
and so do the bench's per-layer timings and the PyTorch twin (`tinyalex/torch_twin.py`). A
model calls the functions of one route: `layers.fast` (impl "fast", the default) or `layers`
itself (impl "readable", the definition: same answers, slower).
"""

import importlib
import threading
import time
from dataclasses import dataclass
from typing import Tuple

import numpy as np

LRN = dict(size=5, k=2.0, alpha=1e-4, beta=0.75)   # the paper's constants (paper alpha convention)
POOL = dict(size=3, stride=2)                       # overlapping pooling
DROP_PROB = 0.5                                     # probability of zeroing a unit


@dataclass(frozen=True)
class Conv:
    filters: int
    kernel: int
    stride: int
    pad: int
    groups: int
    lrn: bool = False
    pool: bool = False


@dataclass(frozen=True)
class Arch:
    name: str
    input_shape: Tuple[int, int, int]
    convs: Tuple[Conv, ...]
    hidden: int            # width of fc6 and fc7


def _alexnet_convs(conv1, widths=(96, 256, 384, 384, 256)):
    c1, c2, c3, c4, c5 = widths
    return (conv1,
            Conv(c2, 5, 1, 2, 2, lrn=True, pool=True),
            Conv(c3, 3, 1, 1, 1),
            Conv(c4, 3, 1, 1, 2),
            Conv(c5, 3, 1, 1, 2, pool=True))


ARCHS = {
    "paper": Arch("paper", (3, 224, 224), _alexnet_convs(Conv(96, 11, 4, 2, 1, lrn=True, pool=True)), 4096),
    "cifar": Arch("cifar", (3, 32, 32), _alexnet_convs(Conv(96, 3, 1, 1, 1, lrn=True, pool=True)), 4096),
    "tiny": Arch("tiny", (3, 32, 32),
                 _alexnet_convs(Conv(16, 3, 1, 1, 1, lrn=True, pool=True), widths=(16, 32, 24, 24, 16)), 32),
}
MODELS = tuple(ARCHS)
INITS = ("torch", "paper", "he")
PAPER_BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")   # the paper's biases of 1
# The two routes through the layers: `layers/` itself, the definition, and `layers/fast/`, the
# same functions rewritten for speed (the default).
IMPLS = {"fast": "layers.fast", "readable": "layers"}


def layer_plan(arch):
    """The layers of `arch` in network order: [(name, kind, options)], as AlexNet runs them.
    kind is one of conv, relu, lrn, pool, flatten, dropout, dense. The one list that the
    model, the bench's layer timings and the PyTorch twin all follow."""
    plan = []
    for i, spec in enumerate(arch.convs, start=1):
        plan.append((f"conv{i}", "conv", dict(stride=spec.stride, pad=spec.pad, groups=spec.groups)))
        plan.append((f"relu{i}", "relu", {}))
        if spec.lrn:
            plan.append((f"lrn{i}", "lrn", dict(LRN)))
        if spec.pool:
            plan.append((f"pool{i}", "pool", dict(POOL)))
    plan.append(("flatten", "flatten", {}))
    for i in (6, 7):
        plan.append((f"drop{i}", "dropout", dict(drop_prob=DROP_PROB)))
        plan.append((f"fc{i}", "dense", {}))
        plan.append((f"relu{i}", "relu", {}))
    plan.append(("fc8", "dense", {}))
    return plan


def followed_by_relu(arch):
    """Names of the weight layers whose output goes through a ReLU: all but fc8."""
    plan = layer_plan(arch)
    return {name for (name, _, _), (_, after, _) in zip(plan, plan[1:]) if after == "relu"}


def conv_output_shape(arch):
    """(C, H, W) after conv5's pool: what fc6 sees, flattened."""
    C, H, W = arch.input_shape
    for spec in arch.convs:
        H = (H + 2 * spec.pad - spec.kernel) // spec.stride + 1
        W = (W + 2 * spec.pad - spec.kernel) // spec.stride + 1
        if spec.pool:
            H = (H - POOL["size"]) // POOL["stride"] + 1
            W = (W - POOL["size"]) // POOL["stride"] + 1
        C = spec.filters
    return C, H, W


def param_shapes(arch, num_classes):
    """Parameter name -> shape, in network order."""
    shapes = {}
    C = arch.input_shape[0]
    for i, spec in enumerate(arch.convs, start=1):
        shapes[f"conv{i}.w"] = (spec.filters, C // spec.groups, spec.kernel, spec.kernel)
        shapes[f"conv{i}.b"] = (spec.filters,)
        C = spec.filters
    widths = [int(np.prod(conv_output_shape(arch))), arch.hidden, arch.hidden, num_classes]
    for name, d_in, d_out in zip(("fc6", "fc7", "fc8"), widths[:-1], widths[1:]):
        shapes[f"{name}.w"] = (d_out, d_in)
        shapes[f"{name}.b"] = (d_out,)
    return shapes


def init_params(arch, num_classes, init="torch", seed=0, dtype=np.float32):
    """Initial parameters.

    torch: PyTorch's default for Conv2d/Linear: weights and biases uniform in +-1/sqrt(fan_in)
           (fan_in = inputs per output: (C/groups)*KH*KW or D). What the PyTorch reference used.
    paper: the paper's: weights N(0, 0.01), biases 1 in conv2, conv4, conv5, fc6, fc7 (to give
           ReLUs positive inputs early) and 0 elsewhere. On CIFAR-10 this stays at chance.
    he:    He et al. (Kaiming normal, fan-in): weights N(0, gain^2 / fan_in), biases 0, with
           gain^2 = 2 for a layer followed by a ReLU (it zeroes half its input's variance on
           average, so each layer keeps the second moment of the signal) and 1 for fc8, whose
           logits go to the softmax as they are. PyTorch's kaiming_normal_ with
           nonlinearity "relu" and "linear".
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    relu_after = followed_by_relu(arch)
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    params = {}
    for name, shape in param_shapes(arch, num_classes).items():
        layer, kind = name.split(".")
        fan_in = int(np.prod(params[f"{layer}.w"].shape[1:])) if kind == "b" else int(np.prod(shape[1:]))
        # (drawn directly in the model's dtype and scaled in place: 28 M float64 draws and
        # temporaries cost most of a second)
        if init == "torch":
            bound = dtype.type(1.0 / np.sqrt(fan_in))
            value = rng.random(shape, dtype=dtype)                             # U(0, 1), then
            value *= 2 * bound                                                 # in place, to
            value -= bound                                                     # U(-bound, bound)
        elif kind == "b":
            one = init == "paper" and layer in PAPER_BIAS_ONE
            value = np.full(shape, 1.0 if one else 0.0, dtype=dtype)
        else:
            gain2 = 2.0 if layer in relu_after else 1.0
            std = 0.01 if init == "paper" else np.sqrt(gain2 / fan_in)
            value = rng.standard_normal(shape, dtype=dtype)
            value *= dtype.type(std)                                           # N(0, std^2)
        params[name] = value
    return params


def layer_ops(impl):
    """The module whose functions a model with this route calls: layers.fast or layers."""
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {', '.join(IMPLS)}")
    return importlib.import_module(IMPLS[impl])


class AlexNet:
    """An AlexNet: parameters plus the forward and backward passes through `layers/` (impl
    "readable") or `layers/fast/` (impl "fast", the default), walking `layer_plan`."""

    def __init__(self, arch, num_classes=10, *, init="torch", seed=0, dtype=np.float32, impl="fast"):
        self.arch = arch
        self.name = arch.name
        self.input_shape = arch.input_shape
        self.num_classes = int(num_classes)
        self.dtype = np.dtype(dtype)
        self.impl = impl
        self.ops = layer_ops(impl)
        self.plan = layer_plan(arch)
        self.params = init_params(arch, self.num_classes, init, seed, dtype)

    def _check_input(self, x):
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise ValueError(f"the {self.name} model takes input of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {x.shape}")

    def forward_tape(self, x, *, train=False, rng=None, upto=None, times=None):
        """The forward pass, layer by layer along `self.plan`.

        Inputs: x (N, C, H, W); train and rng (np.random.Generator) for dropout; upto, a layer
        name of the plan to stop after ("relu7": fc7's features); times, a dict that receives
        each layer's seconds. Returns: the output (the logits (N, classes), unless upto) and the
        tape, one (name, kind, cache) per layer, for backward_tape.
        """
        self._check_input(x)
        ops, p = self.ops, self.params
        fuse = hasattr(ops, "conv_relu_forward")   # the fast route runs each conv's ReLU inside it
        h, tape = x, []
        for name, kind, opts in self.plan:
            start = time.perf_counter()
            if kind == "conv":
                conv = ops.conv_relu_forward if fuse else ops.conv_forward
                h, cache = conv(h, p[f"{name}.w"], p[f"{name}.b"], **opts)
            elif kind == "relu" and fuse and tape[-1][1] == "conv":
                cache = None                                             # done inside the conv
            elif kind == "relu":
                h, cache = ops.relu_forward(h)
            elif kind == "lrn":
                h, cache = ops.lrn_forward(h, **opts)
            elif kind == "pool":
                h, cache = ops.maxpool_forward(h, **opts)
            elif kind == "flatten":
                h, cache = h.reshape(h.shape[0], -1), h.shape            # (N, C*H*W)
            elif kind == "dropout":
                h, cache = ops.dropout_forward(h, train=train, rng=rng, **opts)
            elif kind == "dense":
                h, cache = ops.dense_forward(h, p[f"{name}.w"], p[f"{name}.b"])
            if times is not None:
                times[name] = time.perf_counter() - start
            tape.append((name, kind, cache))
            if name == upto:
                break
        return h, tape

    def backward_tape(self, tape, dout, *, need_dx=False, times=None):
        """The backward pass: the tape of forward_tape walked in reverse from dout, the
        gradient of the output. Returns: grads keyed like params (in network order), and dx, the
        input's gradient (None unless need_dx: the image needs none). Empties the tape as it goes
        (each cache is freed once used)."""
        ops = self.ops
        grads = {}
        while tape:
            name, kind, cache = tape.pop()
            start = time.perf_counter()
            if kind == "conv":
                if not tape and not need_dx and self.impl == "fast":   # the fast route can skip dx
                    dout, grads[f"{name}.w"], grads[f"{name}.b"] = ops.conv_backward(dout, cache, need_dx=False)
                else:
                    dout, grads[f"{name}.w"], grads[f"{name}.b"] = ops.conv_backward(dout, cache)
            elif kind == "relu" and cache is not None:   # (a fused ReLU is in conv_backward)
                dout = ops.relu_backward(dout, cache)
            elif kind == "lrn":
                dout = ops.lrn_backward(dout, cache)
            elif kind == "pool":
                dout = ops.maxpool_backward(dout, cache)
            elif kind == "flatten":
                dout = dout.reshape(cache)
            elif kind == "dropout":
                dout = ops.dropout_backward(dout, cache)
            elif kind == "dense":
                dout, grads[f"{name}.w"], grads[f"{name}.b"] = ops.dense_backward(dout, cache)
            if times is not None:
                times[name] = time.perf_counter() - start
        grads = {k: grads[k] for k in self.params if k in grads}           # network order
        return grads, (dout if need_dx else None)

    def forward(self, x, *, upto=None):
        """Evaluation mode (no dropout). Inputs: x (N, C, H, W); upto as in forward_tape.
        Returns: logits (N, classes), or the output of layer `upto`."""
        return self.forward_tape(x, upto=upto)[0]

    def loss(self, x, y, *, rng=None, train=True, return_dx=False, return_logits=False,
             smoothing=0.0):
        """Training step maths: forward with dropout, softmax cross-entropy, backward.

        Inputs: x (N, C, H, W), y (N,) labels, rng (np.random.Generator) for the dropout masks,
        smoothing: the loss's label smoothing (layers/loss.py).
        Returns: (loss, grads) with grads keyed like params; then, if asked, dx (the input
        gradient, for gradient checks) and the logits (for the running accuracy).
        """
        logits, tape = self.forward_tape(x, train=train, rng=rng)
        loss, dlogits = self.ops.softmax_cross_entropy(logits, y, smoothing)
        grads, dx = self.backward_tape(tape, dlogits, need_dx=return_dx)
        extra = ((dx,) if return_dx else ()) + ((logits,) if return_logits else ())
        return (loss, grads) + extra


def build_model(name="cifar", num_classes=10, *, init="torch", seed=0, dtype=np.float32, impl="fast"):
    """An AlexNet by name: "paper" (224x224), "cifar" (32x32) or "tiny" (32x32, few channels: for
    checks and tests), on the fast route (impl "fast") or the readable one ("readable")."""
    if name not in ARCHS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(ARCHS)}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"models compute in float32 or float64, not {np.dtype(dtype)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    layer_ops(impl)   # an unknown route: ValueError before any weight is drawn
    return AlexNet(ARCHS[name], num_classes, init=init, seed=seed, dtype=dtype, impl=impl)


def warm_up(dtype=np.float32, impl="fast"):
    """Start loading every Numba kernel of a training step on a background thread; returns the
    thread (a daemon: nothing waits for it).

    The first kernel a process runs costs Numba about half a second of its own set-up (it
    imports and registers its compiler's libraries, even to load a compiled kernel from the
    cache), and each further kernel a little more. Started first, this overlaps that work
    with whatever comes next (reading the data, drawing the initial weights: NumPy work that
    releases the interpreter) instead of adding it to the first training step. It runs one
    training step of the `tiny` model, which calls every kernel with the same argument types
    as the full-size models. A step that reaches a kernel still loading waits for it (Numba
    takes a lock), so nothing is loaded or compiled twice. Errors are ignored here: the real
    step meets and reports them.
    """
    def step():
        try:
            from tinyalex.optim import SGD
            model = build_model("tiny", dtype=dtype, impl=impl)
            x = np.ones((2,) + model.input_shape, dtype)
            _, grads = model.loss(x, np.zeros(2, np.int64), rng=np.random.default_rng(0))
            SGD(model.params).step(model.params, grads, 0.0)
        except Exception:  # noqa: BLE001 (a warm-up only)
            pass
    thread = threading.Thread(target=step, name="tinyalex-warm-up", daemon=True)
    thread.start()
    return thread
