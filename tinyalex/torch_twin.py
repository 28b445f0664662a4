"""The PyTorch twin: the same AlexNet as torch.nn modules, for the parity tests, the bench
and `torch-train`. PyTorch is an optional extra; it is imported only when a twin is built.

Conventions the twin must match:
- LRN: PyTorch's LocalResponseNorm multiplies the window's *mean* of squares by alpha, the
  paper (and tinyalex) its *sum*, so the twin gets alpha * size.
- Dropout: PyTorch's p is the drop probability, like tinyalex's drop_prob.
- Parameters: conv (F, C/groups, KH, KW) and dense (out, in), the same layouts as tinyalex's,
  so a state_dict entry "conv2.weight" is tinyalex's "conv2.w".
"""

from collections import OrderedDict

import numpy as np

from tinyalex.errors import TinyAlexError, install_hint
from tinyalex.model import layer_plan, param_shapes

INSTALL_HINT = install_hint("torch")


def import_torch():
    """PyTorch, or a one-line TinyAlexError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise TinyAlexError(f"PyTorch is not installed; this command needs it: {INSTALL_HINT}") from None
    return torch


def torch_model(arch, num_classes, params=None):
    """The same network as a torch.nn.Sequential with modules named like `layer_plan`'s
    layers; params (tinyalex's dict, same layouts) are copied in when given, else PyTorch's
    own initialisation is kept."""
    torch = import_torch()
    nn = torch.nn
    shapes = param_shapes(arch, num_classes)
    modules = OrderedDict()
    for name, kind, opts in layer_plan(arch):
        if kind == "conv":
            F, Cg, KH, KW = shapes[f"{name}.w"]
            modules[name] = nn.Conv2d(Cg * opts["groups"], F, (KH, KW), stride=opts["stride"],
                                      padding=opts["pad"], groups=opts["groups"])
        elif kind == "relu":
            modules[name] = nn.ReLU(inplace=True)        # as torchvision's AlexNet
        elif kind == "lrn":
            modules[name] = nn.LocalResponseNorm(opts["size"], alpha=opts["alpha"] * opts["size"],
                                                 beta=opts["beta"], k=opts["k"])
        elif kind == "pool":
            modules[name] = nn.MaxPool2d(opts["size"], opts["stride"])
        elif kind == "flatten":
            modules[name] = nn.Flatten()
        elif kind == "dropout":
            modules[name] = nn.Dropout(opts["drop_prob"])
        elif kind == "dense":
            M, D = shapes[f"{name}.w"]
            modules[name] = nn.Linear(D, M)
    net = nn.Sequential(modules)
    if params is not None:
        with torch.no_grad():
            for key, value in params.items():
                layer, kind = key.split(".")
                target = getattr(net, layer).weight if kind == "w" else getattr(net, layer).bias
                target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
    return net
