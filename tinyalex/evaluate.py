"""Using a trained model: the `evaluate`, `predict` and `filters` commands.

    python -m tinyalex evaluate CKPT [--data PATH] [--split test|val] [--tta flip|none|10crop]
                                     [--batch-size N] [--json] [--confusion-png FILE]
    python -m tinyalex predict CKPT IMAGE... [--top K] [--json]
    python -m tinyalex filters CKPT --out conv1.png

The functions under them, for other code to reuse:

    load_model(path) -> (model, ckpt)          a checkpoint, checked, as a ready model
    predict_logits(model, x, batch_size)       batched forward pass, dropout off
    softmax(logits)                            class probabilities, row by row
    evaluate_arrays(model, images, labels, *, mean, std, image_size, tta, batch_size)
        -> {"n", "top1", "top5", "loss", "per_class", "counts", "confusion"}

Evaluation sees the images exactly as validation did in training: uint8 pixels scaled to
0..1 and normalised with the mean and std stored in the checkpoint (the training split's,
never recomputed from the evaluation images), resized when the model takes 224x224.
Test-time augmentation (`--tta`) averages the softmax outputs over views of each image
(`tinyalex.data.eval_views`): `flip` (the default) the image and its mirror, reported with
the scores of the image alone (the centre view, `--tta none`) beside it, `10crop` the four corner
crops and the centre crop plus their mirrors, as in the paper's section 4.1 (for the 32x32
models the crops are windows of the 4-padded image, the extreme training crops).

    top-1     the fraction of images whose most probable class is the true one
    top-5     the fraction whose true class is among the five most probable (among all of
              them when the model has 5 classes or fewer, which makes it 1)
    confusion matrix[i, j] = images of true class i predicted as class j; a row sums to the
              number of images of class i, its diagonal entry over that is the class's
              accuracy

Which images `evaluate` uses (`--data` takes every source `tinyalex.data` reads):

    --split test   the source's test split (an error if it has none)
    --split val    the validation images held out in training, carved out again exactly as
                   the trainer did: the same source, `val_size` and `seed` (from the
                   checkpoint's config), and only the `limit_val` sampled if that was set
    no --split     the test split if there is one; a single-split image folder
                   ROOT/<class>/* is evaluated whole (all its images)

The source's classes are matched to the checkpoint's by name, so a folder may hold just
some of the classes (`cat/` and `dog/` for a CIFAR-10 model), in any order; a class the
model does not know is an error. Predictions still range over all the model's classes.
"""

import argparse
import json
import os

import numpy as np
from tqdm import tqdm

from tinyalex.argtypes import positive_int
from tinyalex.checkpoint import load_model_checkpoint
from tinyalex.data import eval_views, load_dataset, load_images
from tinyalex.data.transforms import VIEW_MODES
from tinyalex.errors import CheckpointError, DataError, TinyAlexError
from tinyalex.model import build_model
from tinyalex.pictures import confusion_png, filter_grid

DEFAULT_BATCH_SIZE = 128
TOP_K = 5                      # the paper's top-5 error; also predict's default
TOWERS = 2                     # conv1's kernels split as the paper's two GPUs

NUM_VIEWS = {"none": 1, "flip": 2, "10crop": 10}   # views per image of eval_views, by mode

# filters: towers whose mean colourfulness differs by less than this count as alike. For
# scale: grey kernels score 0, kernels with independent random channels about 0.7.
COLOUR_GAP = 0.1


# --------------------------------------------------------------------------------------
# Checkpoint -> model
# --------------------------------------------------------------------------------------

def load_model(path, impl="fast"):
    """Load a checkpoint and turn it into a model in evaluation-ready form.

    The checkpoint is checked by checkpoint.load_model_checkpoint, as for every other use
    of a trained model (a known model, its class names, parameters of the right keys,
    shapes and float dtype, finite, and the data's normalisation). Parameters are cast to
    the model's dtype (float32).

    Returns (model, ckpt): an AlexNet holding the checkpoint's parameters and the
    Checkpoint (params, optimizer, arrays, meta). Raises CheckpointError (one line) for a
    missing, corrupt, foreign or mismatched checkpoint.
    """
    path = os.fspath(path)
    ckpt = load_model_checkpoint(path)
    model = build_model(ckpt.meta["model"], ckpt.meta["num_classes"], impl=impl)
    model.params = {key: np.ascontiguousarray(ckpt.params[key], dtype=model.dtype)
                    for key in model.params}
    return model, ckpt


def normalisation(ckpt, path="checkpoint"):
    """The training split's per-channel (mean, std) stored in a checkpoint (checked by
    load_model_checkpoint: 3 finite numbers each, std positive)."""
    return (np.asarray(ckpt.arrays["mean"], np.float32),
            np.asarray(ckpt.arrays["std"], np.float32))


# --------------------------------------------------------------------------------------
# Forward passes and scores
# --------------------------------------------------------------------------------------

def predict_logits(model, x, batch_size=DEFAULT_BATCH_SIZE):
    """Logits (N, classes) for inputs x (N, C, H, W), `batch_size` images at a time.

    Evaluation mode (dropout off). The input is cast to the model's dtype (float32), and
    so are the logits. Raises CheckpointError if any logit is NaN or infinite: finite
    weights can still overflow, and argmax would read NaN rows as class 0.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = np.asarray(x)
    out = np.empty((len(x), model.num_classes), dtype=model.dtype)
    for start in range(0, len(x), batch_size):
        batch = np.ascontiguousarray(x[start:start + batch_size], dtype=model.dtype)
        with np.errstate(over="ignore", invalid="ignore"):    # checked just below
            out[start:start + len(batch)] = model.forward(batch)
    broken = ~np.isfinite(out).all(axis=1)
    if broken.any():
        raise CheckpointError(f"the model's outputs are NaN or infinite for {broken.sum()} of "
                              f"{len(out)} inputs: its weights give no usable predictions "
                              f"(did the run that made them diverge?)")
    return out


def softmax(logits):
    """Row-wise softmax; the row maximum is subtracted first so exp cannot overflow."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def evaluate_arrays(model, images, labels, *, mean, std, image_size=None, tta="none",
                    batch_size=DEFAULT_BATCH_SIZE, progress=False):
    """Score a model on uint8 images.

    Inputs:
    - model: an AlexNet (e.g. from load_model).
    - images: uint8 (N, H, W, 3), as tinyalex.data loads them; labels: ints (N,) in
      0..model.num_classes-1.
    - mean, std: (3,) training normalisation in 0..1 pixel units (the checkpoint's).
    - image_size: the model's input side (default: model.input_shape[1]).
    - tta: "none", "flip" or "10crop": softmax averaged over that many views per image.
    - batch_size: views per forward pass (with tta="10crop", batch_size // 10 images).
    - progress: show a tqdm bar (on stderr, and only on a terminal).

    Returns a dict (with tta "flip", also "centre": {"top1", "top5", "loss"} of the first
    view alone, the unmirrored image, which costs nothing more):
    - "n": number of images
    - "top1", "top5": fractions in [0, 1] (top-5: top-min(5, classes))
    - "loss": mean cross-entropy -log p(true class) of the (averaged) probabilities
    - "per_class": (K,) float64 accuracy per true class, NaN for a class with no images
    - "counts": (K,) int64 images per true class
    - "confusion": (K, K) int64, [true class, predicted class]
    """
    K = model.num_classes
    image_size = model.input_shape[1] if image_size is None else int(image_size)
    if image_size != model.input_shape[1]:
        raise ValueError(f"image_size {image_size} does not match the {model.name} model's "
                         f"input {model.input_shape[1]}")
    if tta not in VIEW_MODES:
        raise ValueError(f"tta must be one of {', '.join(VIEW_MODES)}, got {tta!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"labels must be integers of shape ({len(images)},), got "
                         f"{labels.dtype} {labels.shape}")
    labels = labels.astype(np.int64)
    if len(labels) == 0:
        raise DataError("no images to evaluate")
    if labels.min() < 0 or labels.max() >= K:
        raise ValueError(f"labels must lie in 0..{K - 1}, got {labels.min()}..{labels.max()}")

    # Each forward pass takes `batch_size` views: all the views of `chunk` images.
    chunk = max(1, batch_size // NUM_VIEWS[tta])
    probs = np.empty((len(labels), K), np.float64)
    first = np.empty((len(labels), K), np.float64)                     # view 0's alone
    starts = range(0, len(labels), chunk)
    for start in tqdm(starts, desc="evaluating", unit="batch", leave=False,
                      disable=None if progress else True):
        views = eval_views(images[start:start + chunk], tta, image_size, mean, std)
        logits = predict_logits(model, np.concatenate(views), batch_size)   # (V*B, K), V views
        p = softmax(logits).reshape(len(views), -1, K)                       # (V, B, K)
        probs[start:start + p.shape[1]] = p.mean(axis=0)
        first[start:start + p.shape[1]] = p[0]

    result = _scores(probs, labels)
    predicted = probs.argmax(axis=1)                                   # (N,)
    confusion = np.zeros((K, K), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    counts = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, np.diag(confusion) / counts, np.nan)
    result.update(n=int(len(labels)), per_class=per_class, counts=counts, confusion=confusion)
    if tta == "flip":
        result["centre"] = _scores(first, labels)
    return result


def _scores(probs, labels):
    """{"top1", "top5", "loss"} of class probabilities (N, K) against labels (N,)."""
    k = min(TOP_K, probs.shape[1])
    top_k = np.argpartition(-probs, k - 1, axis=1)[:, :k]              # (N, k), unordered
    true_p = probs[np.arange(len(labels)), labels]
    return {"top1": float(np.mean(probs.argmax(axis=1) == labels)),
            "top5": float(np.mean((top_k == labels[:, None]).any(axis=1))),
            "loss": float(np.mean(-np.log(np.maximum(true_p, np.finfo(np.float64).tiny))))}


# --------------------------------------------------------------------------------------
# evaluate: which images
# --------------------------------------------------------------------------------------

def _single_split_folder(ds):
    """True for an image folder laid out ROOT/<class>/* (no train/ and test/ level).

    tinyalex.data names an image-folder source "image folder (<absolute root>)".
    """
    prefix = "image folder ("
    if ds.test_x is not None or not ds.source.startswith(prefix):
        return False
    root = ds.source[len(prefix):-1]
    return not os.path.isdir(os.path.join(root, "train"))


def _config_int(meta, key, path, *, optional=False):
    """A non-negative integer training option from the checkpoint's config."""
    value = (meta.get("config") or {}).get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"checkpoint {path} has no usable config[{key!r}] "
                              f"({value!r}), needed to carve out the validation split again")
    return value


def load_split(ckpt, path, *, data, data_dir, split, skip_bad_images=False):
    """The images and labels `evaluate` scores, with labels in the checkpoint's class order.

    Returns (images uint8 (N, H, W, 3), labels (N,), description). See the module
    docstring for `split` (None, "test" or "val").
    """
    if split == "val":
        val_size = _config_int(ckpt.meta, "val_size", path)
        seed = _config_int(ckpt.meta, "seed", path)
        # the trainer validated on a seeded sample of --limit-val of them, if it was given
        limit = _config_int(ckpt.meta, "limit_val", path, optional=True)
        if val_size == 0:
            raise DataError(f"checkpoint {path} was trained without a validation split "
                            f"(val_size 0); use --split test")
    else:
        val_size, seed = 0, 0        # keep every training image together
    ds = load_dataset(data, data_dir=data_dir, val_size=val_size, seed=seed,
                      skip_bad_images=skip_bad_images)

    if split == "val":
        from .trainer import subset
        images, labels = subset(ds.val_x, ds.val_y, limit, seed, "val")
        what = (f"validation split (val_size {val_size}, seed {seed}"
                f"{f', the {len(labels)} sampled by --limit-val' if limit else ''})")
    elif ds.test_x is not None:
        images, labels, what = ds.test_x, ds.test_y, "test split"
    elif split is None and _single_split_folder(ds):
        images, labels, what = ds.train_x, ds.train_y, "all images"
    elif _single_split_folder(ds):
        raise DataError(f"{ds.source} has no test split; leave out --split to evaluate "
                        f"all its images, or pass --split val")
    else:
        raise DataError(f"{ds.source} has no test split; pass --split val for the "
                        f"validation images held out in training")

    # Match the source's classes to the model's by name.
    known = {name: i for i, name in enumerate(ckpt.meta["classes"])}
    unknown = [c for c in ds.classes if c not in known]
    if unknown:
        raise DataError(f"{ds.source} has class(es) {', '.join(map(repr, unknown[:5]))} "
                        f"that the checkpoint does not know (it has: "
                        f"{', '.join(ckpt.meta['classes'])})")
    to_model = np.array([known[c] for c in ds.classes], np.int64)
    return images, to_model[labels], f"{ds.source}, {what}"


# --------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------

def format_report(result, classes):
    """The text `evaluate` prints: top-1/top-5, per-class accuracy, the confusion matrix.

    Classes without images get no row (their column stays: the model may still predict them).
    """
    counts, confusion = result["counts"], result["confusion"]
    present = [i for i in range(len(classes)) if counts[i] > 0]
    name_w = max(len(classes[i]) for i in present)
    label = f"   ({result['n']} images)"
    lines = []
    if "centre" in result:     # flip TTA: the headline, and the centre image alone under it
        c = result["centre"]
        label = f"   flip TTA (image + mirror), {result['n']} images"
        lines.append(f"top-1 {100 * c['top1']:.2f}%   top-5 {100 * c['top5']:.2f}%   "
                     f"loss {c['loss']:.4f}   centre image only")
    lines[:0] = [f"top-1 {100 * result['top1']:.2f}%   top-5 {100 * result['top5']:.2f}%   "
                 f"loss {result['loss']:.4f}{label}"]
    lines += ["", "per-class accuracy" + (" (flip TTA)" if "centre" in result else "")]
    for i in present:
        lines.append(f"  {classes[i]:<{name_w}}  {100 * result['per_class'][i]:6.2f}%  "
                     f"{confusion[i, i]:>{len(str(counts.max()))}} / {counts[i]}")
    cell = max(len(str(confusion.max())), len(str(len(classes) - 1))) + 2
    label_w = len(str(len(classes) - 1)) + 1 + name_w
    lines += ["", "confusion matrix (rows: true class, columns: predicted class, by number)"]
    lines.append(" " * (2 + label_w) + "".join(f"{j:>{cell}}" for j in range(len(classes))))
    for i in present:
        label = f"{i:>{len(str(len(classes) - 1))}} {classes[i]:<{name_w}}"
        lines.append(f"  {label}" + "".join(f"{v:>{cell}}" for v in confusion[i]))
    if len(present) < len(classes):
        lines.append(f"  ({len(classes) - len(present)} class(es) without images left out)")
    return "\n".join(lines)


def filters_verdict(scores):
    """One line reading the two towers' colourfulness (see pictures.colourfulness)."""
    a, b = scores
    paper = "the paper saw GPU 1 colour-agnostic, GPU 2 colour-specific"
    if abs(a - b) < COLOUR_GAP:
        if min(a, b) > 0.6:
            return (f"both towers score like random kernels (about 0.7): no colour "
                    f"specialisation yet ({paper})")
        return f"the two towers are about equally colourful: no specialisation ({paper})"
    grey, colour = (0, 1) if a < b else (1, 0)
    return (f"tower {grey} is the colour-agnostic one, tower {colour} the colour-specific "
            f"one, like the paper's two GPUs ({paper})")


# --------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------

def _check_output(path):
    """Fail early (before minutes of work) if `path` cannot be a new file."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise TinyAlexError(f"cannot write {path}: directory {directory} does not exist")
    if os.path.isdir(path):
        raise TinyAlexError(f"cannot write {path}: it is a directory")


def _write_picture(draw, path):
    try:
        return draw()
    except OSError as e:
        raise TinyAlexError(f"cannot write {path}: {e.strerror or e}") from None


def run_evaluate(args):
    model, ckpt = load_model(args.checkpoint, impl=getattr(args, "impl", "fast"))
    mean, std = normalisation(ckpt, args.checkpoint)
    if args.confusion_png:
        _check_output(args.confusion_png)
    images, labels, where = load_split(ckpt, args.checkpoint, data=args.data,
                                       data_dir=args.data_dir, split=args.split,
                                       skip_bad_images=args.skip_bad_images)
    result = evaluate_arrays(model, images, labels, mean=mean, std=std, tta=args.tta,
                             batch_size=args.batch_size, progress=True)
    classes = ckpt.meta["classes"]
    if args.confusion_png:
        _write_picture(lambda: confusion_png(result["confusion"], classes, args.confusion_png),
                       args.confusion_png)
    if args.json:
        per_class = result["per_class"]
        print(json.dumps({
            "checkpoint": args.checkpoint, "model": model.name, "data": where,
            "tta": args.tta, "images": result["n"], "top1": result["top1"],
            "top5": result["top5"], "loss": result["loss"], "centre": result.get("centre"),
            "classes": classes,
            "per_class": {c: None if np.isnan(a) else float(a) for c, a in zip(classes, per_class)},
            "counts": {c: int(n) for c, n in zip(classes, result["counts"])},
            "confusion": result["confusion"].tolist(),
            "confusion_png": args.confusion_png}))
        return 0
    print(f"{args.checkpoint}: {model.name} model, epoch {ckpt.meta.get('epoch', '?')}, "
          f"{model.num_classes} classes")
    print(f"data: {where}; test-time views: {args.tta}")
    print(format_report(result, classes))
    if args.confusion_png:
        print(f"confusion matrix picture: {args.confusion_png}")
    return 0


def run_predict(args):
    model, ckpt = load_model(args.checkpoint, impl=getattr(args, "impl", "fast"))
    mean, std = normalisation(ckpt, args.checkpoint)
    classes = ckpt.meta["classes"]
    k = min(args.top, model.num_classes)
    results = []
    # a chunk of files at a time: 128 images for the 224 model are 77 MB of floats
    for start in range(0, len(args.images), DEFAULT_BATCH_SIZE):
        paths = args.images[start:start + DEFAULT_BATCH_SIZE]
        x = load_images(paths, model.input_shape[1], mean, std)      # (B, 3, S, S)
        probs = softmax(predict_logits(model, x))                     # (B, K)
        for path, p in zip(paths, probs):
            best = np.argsort(-p, kind="stable")[:k]
            results.append((path, [(classes[j], float(p[j])) for j in best]))
    if args.json:
        print(json.dumps([{"image": path, "top": [{"class": c, "probability": p}
                                                  for c, p in top]}
                          for path, top in results]))
        return 0
    name_w = max(len(c) for c in classes)
    for path, top in results:
        print(path)
        for rank, (c, p) in enumerate(top, start=1):
            print(f"  {rank}. {c:<{name_w}}  {100 * p:6.2f}%")
    return 0


def run_filters(args):
    model, ckpt = load_model(args.checkpoint, impl=getattr(args, "impl", "fast"))
    _check_output(args.out)
    w = model.params["conv1.w"]                                       # (F, 3, KH, KW)
    scores = _write_picture(lambda: filter_grid(w, args.out, towers=TOWERS), args.out)
    per_tower = len(w) // TOWERS
    print(f"wrote {args.out}: {len(w)} conv1 kernels of 3x{w.shape[2]}x{w.shape[3]}, "
          f"{TOWERS} towers of {per_tower}")
    for t, score in enumerate(scores):
        print(f"tower {t} (kernels {t * per_tower}-{(t + 1) * per_tower - 1}): "
              f"colourfulness {score:.3f}")
    print(filters_verdict(scores))
    return 0


def register(subparsers):
    """Add the `evaluate`, `predict` and `filters` commands to an argparse subparsers object.

    Each parser's `func` default is its handler: handler(args) -> exit code. Handlers raise
    TinyAlexError subclasses for user errors (the caller prints them as one line).
    """
    p = subparsers.add_parser(
        "evaluate", help="top-1/top-5, per-class accuracy and confusion matrix of a checkpoint",
        description="Score a checkpoint on a dataset: top-1 and top-5 accuracy, accuracy per "
                    "class and the confusion matrix.")
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint (.npz) written by train.py")
    p.add_argument("--data", metavar="PATH", default=None,
                   help="an extracted cifar-10-batches-py directory (or a directory holding "
                        "one), a .tar.gz archive, or an image folder ROOT/train/<class>/* "
                        "[+ ROOT/test/<class>/*] or ROOT/<class>/* (its classes are matched "
                        "to the checkpoint's by name and may be a subset); default: the "
                        "official CIFAR-10 in --data-dir")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="where downloads, unpacked archives and the image cache go "
                        "(default: $TINYALEX_DATA_DIR, else ./data)")
    p.add_argument("--split", choices=("test", "val"), default=None,
                   help="test: the source's test split; val: the validation images held out "
                        "in training, carved out again with the checkpoint's val_size and "
                        "seed. Default: test if the source has one; a single-split image "
                        "folder ROOT/<class>/* is evaluated whole")
    p.add_argument("--tta", choices=VIEW_MODES, default="flip",
                   help="test-time augmentation, softmax averaged over the views: none (the "
                        "centre image); flip (image + mirror; the default, reported with the "
                        "centre image's scores beside it); 10crop (4 corners + centre, and "
                        "their mirrors, as in the paper)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
                   help=f"images per forward pass, each --tta view counting as one "
                        f"(default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--impl", choices=("fast", "readable"), default="fast",
                   help="the layers that compute: fast (layers/fast/, default) or readable (layers/)")
    p.add_argument("--confusion-png", metavar="FILE", default=None,
                   help="also draw the confusion matrix as a picture (PNG)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip unreadable files of an image folder with a warning")
    p.set_defaults(func=run_evaluate)

    p = subparsers.add_parser(
        "predict", help="the most probable classes of image files",
        description="Classify image files of any size and mode (each is converted to RGB and "
                    "resized as the model needs) and print the top classes with probabilities.")
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint (.npz) written by train.py")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--top", type=positive_int, default=TOP_K, metavar="K",
                   help=f"how many classes to show per image (default {TOP_K})")
    p.add_argument("--json", action="store_true", help="print one JSON array instead of text")
    p.set_defaults(func=run_predict)

    p = subparsers.add_parser(
        "filters", help="draw the conv1 kernels, tower by tower, and score their colour",
        description="Draw the conv1 kernels as an image grid, tower 0 (the first half) above "
                    "tower 1, as in Figure 3 of the AlexNet paper, and print each tower's "
                    "mean colourfulness: 0 for grey kernels, about 0.7 for random ones. The "
                    "paper saw one tower's kernels colour-agnostic and the other's "
                    "colour-specific.")
    p.add_argument("checkpoint", metavar="CKPT", help="a checkpoint (.npz) written by train.py")
    p.add_argument("--out", metavar="PNG", required=True, help="the picture to write")
    p.set_defaults(func=run_filters)
