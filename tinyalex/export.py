"""`python -m tinyalex export CKPT OUT`: a trained network in a format other tools can run.

    python -m tinyalex export runs/RUN/best.npz alexnet.onnx [--softmax] [--no-check]
    python -m tinyalex export runs/RUN/best.npz alexnet.pt --format torch

`--format onnx` (the default) writes a standard ONNX graph (opset 17), built node by node
with the `onnx` package's helper API (`pip install -e ".[onnx]"` brings it and ONNX Runtime;
the library core never needs them). Each layer of the model's plan becomes one node:

    plan kind   ONNX node                                 notes
    conv        Conv(kernel_shape, strides, pads, group)  group=2 where the towers split;
                                                          weights (F, C/groups, KH, KW) as is
    relu        Relu
    lrn         LRN(size, alpha=size*alpha, beta, bias=k) see "LRN's alpha" below
    pool        MaxPool(kernel_shape, strides)            3x3 windows, stride 2, no padding,
                                                          output size rounded down
    flatten     Flatten(axis=1)                           (N, C*H*W), channel-major as here
    dropout     (no node)                                 the identity at inference
    dense       Gemm(transB=1)                            y = x W^T + b, W stored (out, in)
    --softmax   Softmax(axis=1)                           probabilities instead of logits

LRN's alpha. tinyalex, like the paper, multiplies the *sum* of the squares in the window
by alpha: b_c = a_c / (k + alpha * sum a_j^2)^beta. ONNX's LRN, like PyTorch's, divides
its alpha by the window size: b_c = a_c / (bias + alpha/size * sum a_j^2)^beta. So the
node gets alpha = size * 1e-4 = 5e-4 for the paper's layer. At the paper's alpha the
cross-channel term is tiny and the wrong convention almost passes a comparison; the tests
also export a large alpha, where it cannot. The windows agree for odd sizes only (ONNX
puts the extra channel of an even window after c, tinyalex and PyTorch before it), so an
even size is refused.

The graph's metadata (`metadata_props`) says what to feed it: the input layout (N, 3, H, W)
float32, RGB, and the normalisation x = (pixel / 255 - mean) / std with the training
split's per-channel mean and std from the checkpoint, the resizing tinyalex applies, the
class names in output order, and where the model came from.

The check. Unless `--no-check`, the exported graph runs in ONNX Runtime (when installed; the
`onnx` extra brings it) on random inputs, and its logits are compared with tinyalex's
own forward pass: the largest difference, relative to the largest logit, must be at most
1e-4 (float32; the engines add in different orders). Nothing is written when it fails.

`--format torch` writes a PyTorch state_dict (`.pt`, torch.save) for the PyTorch twin
(`tinyalex/torch_twin.py`, modules named like the plan: "conv2.weight" is "conv2.w"),
checked the same way against the twin:

    net = torch_model(ARCHS[name], num_classes); net.load_state_dict(torch.load(path)); net.eval()
"""

import io
import json
import os
import time

import numpy as np

from tinyalex import __version__
from tinyalex.errors import TinyAlexError, install_hint
from tinyalex.model import layer_plan

FORMATS = ("onnx", "torch")
OPSET = 17              # LRN 13, Conv 11, MaxPool 12, Gemm 13, Flatten 13, Softmax 13: all within 17
IR_VERSION = 8          # the IR version that goes with opset 17; ONNX Runtime 1.13 and later run both
CHECK_BATCH = 2         # random images per check
CHECK_TOLERANCE = 1e-4  # max |ours - theirs| / max |ours|, float32
ONNX_HINT = install_hint("onnx")     # brings onnx and onnxruntime


def import_onnx():
    """The onnx package, or a one-line TinyAlexError saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise TinyAlexError(f"the onnx package is not installed; export needs it: "
                            f"{ONNX_HINT}") from None
    return onnx


def import_onnxruntime():
    """onnxruntime, or None when it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


# --------------------------------------------------------------------------------------
# tinyalex model -> ONNX graph
# --------------------------------------------------------------------------------------

def onnx_lrn_alpha(opts):
    """ONNX's LRN alpha for a tinyalex LRN layer: ONNX divides it by the window size again."""
    if opts["size"] % 2 == 0:
        raise ValueError(f"LRN size {opts['size']}: ONNX centres an even window differently "
                         f"from tinyalex; only odd sizes export exactly")
    return opts["alpha"] * opts["size"]


def metadata(model, *, mean, std, classes, softmax=False, source=None):
    """The graph's metadata_props: what to feed the model and what comes out, as strings."""
    C, H, W = model.input_shape
    resize = ("decode to RGB, resize to 32x32 (bicubic, antialiased)"
              + ("" if H == 32 else f", then to {H}x{W} (bilinear, half-pixel centres)"))
    meta = {
        "input.layout": f"NCHW float32: (N, {C}, {H}, {W}), channels R, G, B",
        "input.normalisation": "x = (pixel / 255 - mean) / std, per channel, pixel in 0..255",
        "input.mean": json.dumps([round(float(v), 7) for v in mean]),
        "input.std": json.dumps([round(float(v), 7) for v in std]),
        "input.resize": f"as tinyalex predicts: {resize}",
        "output": ("probabilities (N, classes): softmax of the logits" if softmax
                   else "logits (N, classes), before softmax"),
        "classes": json.dumps(list(classes)),
        "tinyalex.model": model.name,
        "tinyalex.version": __version__,
    }
    if source:
        meta["tinyalex.source"] = source
    return meta


def onnx_model(model, *, mean, std, classes, softmax=False, source=None):
    """The model as an onnx.ModelProto: one node per layer of `layer_plan(model.arch)` (see the module
    docstring), the parameters as float32 initializers named like tinyalex's ("conv1.w"),
    a batch dimension "N" left free, and the metadata of `metadata`. Checked with
    onnx.checker before it is returned."""
    onnx = import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    C, H, W = model.input_shape
    nodes, weights = [], []
    h = "input"                                    # the name of the running activation
    for name, kind, opts in layer_plan(model.arch):   # the network, whatever its route fuses
        if kind == "dropout":                      # the identity at inference: no node
            continue
        out = name
        if kind in ("conv", "dense"):
            for suffix in ("w", "b"):
                value = np.ascontiguousarray(model.params[f"{name}.{suffix}"], np.float32)
                weights.append(numpy_helper.from_array(value, f"{name}.{suffix}"))
        if kind == "conv":
            w = model.params[f"{name}.w"]          # (F, C/groups, KH, KW): ONNX's layout too
            pad = opts["pad"]
            nodes.append(helper.make_node(
                "Conv", [h, f"{name}.w", f"{name}.b"], [out], name=name,
                kernel_shape=list(w.shape[2:]), strides=[opts["stride"]] * 2,
                pads=[pad, pad, pad, pad], group=opts["groups"]))    # pads: begins, then ends
        elif kind == "relu":
            nodes.append(helper.make_node("Relu", [h], [out], name=name))
        elif kind == "lrn":
            nodes.append(helper.make_node(
                "LRN", [h], [out], name=name, size=opts["size"], alpha=onnx_lrn_alpha(opts),
                beta=opts["beta"], bias=opts["k"]))
        elif kind == "pool":
            nodes.append(helper.make_node(
                "MaxPool", [h], [out], name=name, kernel_shape=[opts["size"]] * 2,
                strides=[opts["stride"]] * 2))
        elif kind == "flatten":
            nodes.append(helper.make_node("Flatten", [h], [out], name=name, axis=1))
        elif kind == "dense":                      # Gemm: Y = A B^T + C with B = W (out, in)
            nodes.append(helper.make_node("Gemm", [h, f"{name}.w", f"{name}.b"], [out],
                                          name=name, transB=1))
        else:
            raise ValueError(f"layer {name}: no ONNX node for kind {kind!r}")
        h = out
    output = "probabilities" if softmax else "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", [h], [output], name="softmax", axis=1))
    else:
        nodes[-1].output[0] = output               # fc8's output is the graph's output
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", C, H, W],
                                            "normalised images, see the metadata")]
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT,
                                             ["N", model.num_classes])]
    graph = helper.make_graph(nodes, f"tinyalex_{model.name}", inputs, outputs,
                              initializer=weights,
                              doc_string=f"AlexNet ({model.name}) exported by tinyalex {__version__}")
    proto = helper.make_model(graph, producer_name="tinyalex", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = IR_VERSION
    proto.doc_string = ("AlexNet (Krizhevsky et al. 2012) trained with tinyalex. Input: "
                        "normalised NCHW float32 RGB images; see metadata_props.")
    helper.set_model_props(proto, metadata(model, mean=mean, std=std, classes=classes,
                                           softmax=softmax, source=source))
    onnx.checker.check_model(proto)
    return proto


# --------------------------------------------------------------------------------------
# The checks: another engine, the same logits
# --------------------------------------------------------------------------------------

def relative_difference(ours, theirs):
    """max |ours - theirs| / max |ours|: the difference relative to the largest logit."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"shapes differ: {ours.shape} vs {theirs.shape}")
    return float(np.max(np.abs(ours - theirs)) / max(float(np.max(np.abs(ours))), 1e-30))


def check_inputs(model, batch=CHECK_BATCH, seed=0):
    """Random normalised images (batch, C, H, W) float32: pixels about N(0, 1), as
    normalisation makes them."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, *model.input_shape), dtype=np.float32)


def run_onnxruntime(model_bytes, x):
    """The outputs of a serialised ONNX model on x, computed by ONNX Runtime (CPU)."""
    ort = import_onnxruntime()
    if ort is None:
        raise TinyAlexError(f"onnxruntime is not installed; the check needs it: {ONNX_HINT}")
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]


def tinyalex_outputs(model, x, softmax=False):
    """tinyalex's forward pass in float32 (dropout off), softmaxed if asked; a CheckpointError
    if the outputs are NaN or infinite (there is nothing to compare with)."""
    from tinyalex.scoring import predict_logits
    logits = predict_logits(model, x, len(x)).astype(np.float32)
    if not softmax:
        return logits
    from layers.loss import softmax as softmax_rows
    return softmax_rows(logits).astype(np.float32)


def torch_state_dict(model):
    """The PyTorch twin's state_dict holding the model's parameters (float32 tensors)."""
    from tinyalex.torch_twin import torch_model
    return torch_model(model.arch, model.num_classes, model.params).state_dict()


def run_torch_twin(state_bytes, model, x):
    """Logits of the PyTorch twin loaded from a serialised state_dict."""
    from tinyalex.torch_twin import import_torch, torch_model
    torch = import_torch()
    net = torch_model(model.arch, model.num_classes)
    net.load_state_dict(torch.load(io.BytesIO(state_bytes), weights_only=True))
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------

def run_export(args):
    from tinyalex.checkpoint import load_model, normalisation
    from tinyalex.outfiles import check_new_file, writing
    from tinyalex.outfiles import atomic_write

    # the cheap failures first: a missing package, an unwritable path, a bad checkpoint
    if args.format == "onnx":
        import_onnx()
        ort = import_onnxruntime()
        if args.check and ort is None:
            raise TinyAlexError(f"onnxruntime is not installed; --check needs it: {ONNX_HINT} "
                                "(or leave out --check)")
        check = args.check is not False and ort is not None
    else:
        from tinyalex.torch_twin import import_torch
        import_torch()
        check = args.check is not False
    if args.softmax and args.format == "torch":
        raise TinyAlexError("--softmax applies to --format onnx only (the PyTorch twin "
                            "returns logits)")
    check_new_file(args.out, inputs=[args.checkpoint])
    model, ckpt = load_model(args.checkpoint)
    mean, std = normalisation(ckpt, args.checkpoint)
    classes = ckpt.meta["classes"]

    start = time.perf_counter()
    if args.format == "onnx":
        source = f"{os.path.basename(args.checkpoint)}, epoch {ckpt.meta.get('epoch', '?')}"
        proto = onnx_model(model, mean=mean, std=std, classes=classes, softmax=args.softmax,
                           source=source)
        data = proto.SerializeToString()
    else:
        import torch
        buffer = io.BytesIO()
        torch.save(torch_state_dict(model), buffer)
        data = buffer.getvalue()
    built = time.perf_counter() - start

    verdict = ""
    if check:
        start = time.perf_counter()
        x = check_inputs(model)
        ours = tinyalex_outputs(model, x, softmax=args.softmax)
        theirs = (run_onnxruntime(data, x) if args.format == "onnx"
                  else run_torch_twin(data, model, x))
        diff = relative_difference(ours, theirs)
        engine = "ONNX Runtime" if args.format == "onnx" else "PyTorch"
        if not diff <= CHECK_TOLERANCE:
            raise TinyAlexError(f"{engine} disagrees with tinyalex on {len(x)} random images: "
                                f"max relative difference {diff:.2e} > {CHECK_TOLERANCE:.0e}; "
                                f"nothing written")
        verdict = (f"checked: {engine} and tinyalex agree on {len(x)} random images, max "
                   f"relative difference {diff:.1e} (<= {CHECK_TOLERANCE:.0e}) "
                   f"[{time.perf_counter() - start:.1f} s]")
    elif args.format == "onnx" and args.check is not False:
        verdict = f"not checked: onnxruntime is not installed ({ONNX_HINT})"

    with writing(args.out):
        atomic_write(args.out, lambda f: f.write(data))
    what = ("ONNX graph, opset " + str(OPSET)) if args.format == "onnx" else "PyTorch state_dict"
    print(f"wrote {args.out}: {model.name} model, {model.num_classes} classes, {what}, "
          f"{len(data) / 1e6:.1f} MB [{built:.1f} s]")
    if args.format == "onnx":
        print(f"input 'input' (N, {', '.join(map(str, model.input_shape))}) float32 RGB, "
              f"normalised (pixel/255 - mean) / std with mean {[round(float(v), 4) for v in mean]}, "
              f"std {[round(float(v), 4) for v in std]}; output "
              f"'{'probabilities' if args.softmax else 'logits'}'")
    if verdict:
        print(verdict)
    return 0


def register(subparsers):
    """Add the `export` command to an argparse subparsers object."""
    import argparse
    from tinyalex.argtypes import add_checkpoint_argument
    p = subparsers.add_parser(
        "export", allow_abbrev=False,
        help="write a checkpoint as an ONNX graph (or a PyTorch state_dict), checked",
        description="Write a trained network as a standard ONNX graph (opset 17: Conv with "
                    "group=2 where the towers split, Relu, LRN, MaxPool, Flatten, Gemm, "
                    "optionally Softmax) with the input layout and normalisation in its "
                    "metadata, or as a state_dict for tinyalex's PyTorch twin. The result is "
                    "checked against tinyalex's own forward pass before it is written.")
    add_checkpoint_argument(p)
    p.add_argument("out", metavar="OUT", help="the file to write (model.onnx, model.pt)")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help=f"onnx: an ONNX graph, needs the onnx package ({ONNX_HINT}; default); torch: a PyTorch state_dict (.pt) for "
                        "tinyalex.torch_twin.torch_model")
    p.add_argument("--softmax", action="store_true",
                   help="end the ONNX graph with Softmax: probabilities instead of logits")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=None,
                   help="run the export in ONNX Runtime (or PyTorch) on random images and "
                        "compare with tinyalex's logits; default: check when onnxruntime is "
                        "installed")
    p.set_defaults(func=run_export)
