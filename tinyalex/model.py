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

`layer_plan(arch)` lists the layers in order. A model calls the functions of one route,
`layers.fast` (route "fast", the default) or `layers` itself (route "readable", the definition:
same answers, slower), and walks its plan: forward_tape runs each step with the function
`forward_steps` names for its kind, backward_tape the tape in reverse with `backward_steps`.
Where a route fuses a convolution and its ReLU (ROUTES), the plan has one conv_relu step for
the two. The towers (`tinyalex/mpi/towers.py`) add their exchanges to the same tables; the
ONNX export and the PyTorch twin follow layer_plan too.
"""

import importlib
from dataclasses import dataclass
from typing import Optional, Tuple

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
@dataclass(frozen=True)
class Route:
    module: str              # where its layer functions are
    fuses_conv_relu: bool    # it runs each convolution's ReLU inside it (conv_relu_forward)


ROUTES = {"fast": Route("layers.fast", fuses_conv_relu=True), "readable": Route("layers", fuses_conv_relu=False)}


def layer_plan(arch, fuse_conv_relu=False):
    """The layers of `arch` in network order: [(name, kind, options)], as AlexNet runs them.
    kind is one of conv, relu, lrn, pool, flatten, dropout, dense. The one list that the
    model, the bench's layer timings, the ONNX export and the PyTorch twin all follow.
    fuse_conv_relu: each convolution and its ReLU as one step of kind conv_relu (named like
    the convolution), for a route that runs the ReLU inside the convolution."""
    plan = []
    for i, spec in enumerate(arch.convs, start=1):
        conv = dict(stride=spec.stride, pad=spec.pad, groups=spec.groups)
        if fuse_conv_relu:
            plan.append((f"conv{i}", "conv_relu", conv))
        else:
            plan += [(f"conv{i}", "conv", conv), (f"relu{i}", "relu", {})]
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
    from layers.reference import out_size   # (the layers load with the first model, not before)
    C, H, W = arch.input_shape
    for spec in arch.convs:
        H, W = (out_size(n, spec.kernel, spec.stride, spec.pad) for n in (H, W))
        if spec.pool:
            H, W = (out_size(n, POOL["size"], POOL["stride"], 0) for n in (H, W))
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
           (fan_in = inputs per output: (C/groups)*KH*KW or D).
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


def route_ops(route):
    """The functions a model on this route calls: the module layers.fast or layers, or, for a
    folder, a student's own layers (tinyalex/student.py; tinyalex's readable ones where theirs
    are not written yet)."""
    if route in ROUTES:
        return importlib.import_module(ROUTES[route].module)
    from .student import is_student_route, load_student_route
    if is_student_route(route):
        return load_student_route(route)
    raise ValueError(f"unknown route {route!r}; choose one of {', '.join(ROUTES)} or a folder of your layers")


# Every weight layer's backward step returns (dx, dw, db); every other step returns dx.
WEIGHTED = ("conv", "conv_relu", "dense")


@dataclass
class LossResult:
    """What `AlexNet.loss` returns: the mean loss, the gradients keyed like params, and what
    the caller asked for: the logits (N, classes) and dx (N, C, H, W), the input's gradient."""
    loss: float
    grads: dict
    logits: Optional[np.ndarray] = None
    dx: Optional[np.ndarray] = None


class AlexNet:
    """An AlexNet: parameters plus the forward and backward passes, walking its plan through
    the functions of one route, `layers/fast/` (route "fast", the default) or `layers/`
    (route "readable")."""

    def __init__(self, arch, num_classes=10, *, init="torch", seed=0, dtype=np.float32, route="fast"):
        self.arch = arch
        self.name = arch.name
        self.input_shape = arch.input_shape
        self.num_classes = int(num_classes)
        self.dtype = np.dtype(dtype)
        self.route = route
        self.ops = route_ops(route)
        self.plan = layer_plan(arch, fuse_conv_relu=route in ROUTES and ROUTES[route].fuses_conv_relu)
        self.params = init_params(arch, self.num_classes, init, seed, dtype)

    def forward_steps(self, train, rng):
        """kind -> step(h, name, opts) -> (out, cache): how each kind of layer runs forward.
        train and rng (np.random.Generator) are dropout's."""
        ops, p = self.ops, self.params
        return {
            "conv":      lambda h, name, o: ops.conv_forward(h, p[f"{name}.w"], p[f"{name}.b"], **o),
            "conv_relu": lambda h, name, o: ops.conv_relu_forward(h, p[f"{name}.w"], p[f"{name}.b"], **o),
            "relu":      lambda h, name, o: ops.relu_forward(h),
            "lrn":       lambda h, name, o: ops.lrn_forward(h, **o),
            "pool":      lambda h, name, o: ops.maxpool_forward(h, **o),
            "flatten":   lambda h, name, o: (h.reshape(h.shape[0], -1), h.shape),   # (N, C*H*W)
            "dropout":   lambda h, name, o: ops.dropout_forward(h, train=train, rng=rng, **o),
            "dense":     lambda h, name, o: ops.dense_forward(h, p[f"{name}.w"], p[f"{name}.b"]),
        }

    def backward_steps(self):
        """kind -> step(dout, cache, need_dx) -> dx, or (dx, dw, db) for the kinds in WEIGHTED:
        each kind of layer backward. need_dx False: the step may skip dx (the image's)."""
        ops = self.ops
        return {
            "conv":      lambda d, c, need_dx: ops.conv_backward(d, c, need_dx=need_dx),
            "conv_relu": lambda d, c, need_dx: ops.conv_backward(d, c, need_dx=need_dx),   # both
            "relu":      lambda d, c, need_dx: ops.relu_backward(d, c),
            "lrn":       lambda d, c, need_dx: ops.lrn_backward(d, c),
            "pool":      lambda d, c, need_dx: ops.maxpool_backward(d, c),
            "flatten":   lambda d, c, need_dx: d.reshape(c),
            "dropout":   lambda d, c, need_dx: ops.dropout_backward(d, c),
            "dense":     lambda d, c, need_dx: ops.dense_backward(d, c),
        }

    def forward_tape(self, x, *, train=False, rng=None, upto=None, keep=True):
        """The forward pass, step by step along `self.plan`.

        Inputs: x (N, C, H, W); train and rng (np.random.Generator) for dropout; upto, a layer
        name of the plan to stop after ("relu7": fc7's features); keep=False: no tape, each
        cache dropped once the next step has run (evaluation needs no backward). Returns: the
        output (the logits (N, classes), unless upto) and the tape, one (name, kind, cache) per
        step, for backward_tape.
        """
        self._check_input(x, upto)
        steps = self.forward_steps(train, rng)
        h, tape = x, []
        for name, kind, opts in self.plan:
            h, cache = steps[kind](h, name, opts)
            if keep:
                tape.append((name, kind, cache))
            if name == upto:
                break
        return h, tape

    def backward_tape(self, tape, dout, *, need_dx=False):
        """The backward pass: the tape of forward_tape walked in reverse from dout, the
        gradient of the output. Returns: grads keyed like params (in network order), and dx, the
        input's gradient (None unless need_dx: the image needs none). Empties the tape as it goes
        (each cache is freed once used)."""
        steps = self.backward_steps()
        grads = {}
        while tape:
            name, kind, cache = tape.pop()
            wanted = need_dx or bool(tape)           # the first step's dx is the image's
            if kind in WEIGHTED:
                dout, grads[f"{name}.w"], grads[f"{name}.b"] = steps[kind](dout, cache, wanted)
            else:
                dout = steps[kind](dout, cache, wanted)
        grads = {k: grads[k] for k in self.params if k in grads}           # network order
        return grads, (dout if need_dx else None)

    def forward(self, x, *, upto=None):
        """Evaluation mode (no dropout, and no tape: each layer's cache is freed as it goes).
        Inputs: x (N, C, H, W); upto as in forward_tape.
        Returns: logits (N, classes), or the output of layer `upto`."""
        return self.forward_tape(x, upto=upto, keep=False)[0]

    def loss(self, x, y, *, rng=None, train=True, smoothing=0.0, need_logits=False, need_dx=False):
        """Training step maths: forward with dropout, softmax cross-entropy, backward.

        Inputs: x (N, C, H, W), y (N,) labels, rng (np.random.Generator) for the dropout masks
        (train False: no dropout), smoothing: the loss's label smoothing (layers/loss.py);
        need_logits, need_dx: also return the logits (for the running accuracy), the input's
        gradient (for gradient checks).
        Returns: a LossResult: .loss, .grads (keyed like params), .logits, .dx (None unless asked).
        """
        logits, tape = self.forward_tape(x, train=train, rng=rng)
        loss, dlogits = self.ops.softmax_cross_entropy(logits, y, smoothing)
        grads, dx = self.backward_tape(tape, dlogits, need_dx=need_dx)
        return LossResult(loss, grads, logits if need_logits else None, dx)

    def _check_input(self, x, upto=None):
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise ValueError(f"the {self.name} model takes input of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {x.shape}")
        if upto is not None and upto not in (name for name, _, _ in self.plan):
            raise ValueError(f"upto={upto!r} is not a step of the {self.route} route's plan")


def build_model(name="cifar", num_classes=10, *, init="torch", seed=0, dtype=np.float32, route="fast"):
    """An AlexNet by name: "paper" (224x224), "cifar" (32x32) or "tiny" (32x32, few channels: for
    checks and tests), on the fast route (route "fast") or the readable one ("readable")."""
    if name not in ARCHS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(ARCHS)}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"models compute in float32 or float64, not {np.dtype(dtype)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    route_ops(route)   # an unknown route: ValueError before any weight is drawn
    return AlexNet(ARCHS[name], num_classes, init=init, seed=seed, dtype=dtype, route=route)
