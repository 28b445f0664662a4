"""Using a trained model: the `evaluate` and `predict` commands, as load / score / report.

    python -m tinyalex evaluate CKPT [--data PATH] [--split test|val] [--tta flip|none|10crop]
                                     [--batch-size N] [--json] [--confusion-png FILE]
    python -m tinyalex predict CKPT IMAGE... [--top K] [--json]
    predict_files(model, ckpt, paths, top)      the same from Python (README)

The model comes from `checkpoint.load_model`, the scores from `scoring.score_arrays` (the same
scorer training's validation uses); here: which images (`load_split`) and the report.

Evaluation sees the images exactly as validation did in training: uint8 pixels scaled to
0..1 and normalised with the mean and std stored in the checkpoint (the training split's,
never recomputed from the evaluation images), resized when the model takes 224x224.
Test-time augmentation (`--tta`) averages the softmax outputs over views of each image
(`tinyalex.data.eval_views`): `flip` (the default) the image and its mirror, reported with
the scores of the image alone (the centre view, `--tta none`) beside it, `10crop` the four corner
crops and the centre crop plus their mirrors, as in the paper's section 4.1 (for the 32x32
models the crops are windows of the 4-padded image, the extreme training crops).

The scores (top-1, top-5, loss, the confusion matrix): tinyalex/scoring.py.

Which images `evaluate` uses (`--data` takes every source `tinyalex.data` reads; without
it, the data the run recorded in the checkpoint, `tinyalex.data.recorded_source`):

    --split test   the source's test split (an error if it has none)
    --split val    the validation images held out in training, carved out again exactly as
                   the trainer did: the same source, `val_size` and `seed` (from the
                   checkpoint's config), and only the `limit_val` sampled if that was set
    no --split     the test split if there is one; a single-split image folder
                   ROOT/<class>/* is evaluated whole (all its images); otherwise (a
                   ROOT/train/ folder alone) the validation split, as --split val

The source's classes are matched to the checkpoint's by name, so a folder may hold just
some of the classes (`cat/` and `dog/` for a CIFAR-10 model), in any order; a class the
model does not know is an error. Predictions still range over all the model's classes.
"""

import json
import os

import numpy as np

from layers.loss import softmax
from tinyalex.argtypes import add_checkpoint_argument, add_route_argument, non_empty_path, positive_int
from tinyalex.checkpoint import load_model, model_labels, normalisation
from tinyalex.data import load_dataset, load_images, recorded_source, subset
from tinyalex.data.args import add_skip_bad_images_argument, add_source_arguments, add_split_argument
from tinyalex.data.transforms import VIEW_MODES, VIEW_NAMES
from tinyalex.errors import CheckpointError, DataError
from tinyalex.outfiles import check_new_file, writing
from tinyalex.pictures import confusion_png
from tinyalex.scoring import DEFAULT_BATCH_SIZE, TOP_K, predict_logits, score_arrays



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
    given = data, data_dir
    data, data_dir, how = recorded_source(ckpt.meta, data, data_dir)
    ds = load_dataset(data, data_dir=data_dir, val_size=val_size, seed=seed,
                      skip_bad_images=skip_bad_images)

    if split == "val":
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
    elif split is None and (ckpt.meta.get("config") or {}).get("val_size"):
        # the run's own training images, without a test split: score what it held out
        images, labels, where = load_split(ckpt, path, data=given[0], data_dir=given[1],
                                           split="val", skip_bad_images=skip_bad_images)
        return images, labels, f"{where}; the data has no test split"
    else:
        raise DataError(f"{ds.source} has no test split; pass --split val for the "
                        f"validation images held out in training")

    return images, model_labels(ckpt, ds)[labels], f"{ds.source}{how}, {what}"


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
        label = f"   {VIEW_NAMES['flip']}, {result['n']} images"
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


# --------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------

def run_evaluate(args):
    model, ckpt = load_model(args.checkpoint, route=getattr(args, "route", "fast"))
    mean, std = normalisation(ckpt, args.checkpoint)
    if args.confusion_png:
        check_new_file(args.confusion_png, inputs=[args.checkpoint])
    images, labels, where = load_split(ckpt, args.checkpoint, data=args.data,
                                       data_dir=args.data_dir, split=args.split,
                                       skip_bad_images=args.skip_bad_images)
    result = score_arrays(model, images, labels, mean=mean, std=std, tta=args.tta,
                          batch_size=args.batch_size, progress=True)
    classes = ckpt.meta["classes"]
    if args.confusion_png:
        with writing(args.confusion_png):
            confusion_png(result["confusion"], classes, args.confusion_png,
                          subtitle=f"{where}; {VIEW_NAMES[args.tta]}")
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


def predict_files(model, ckpt, paths, top=5):
    """[(path, [(class name, probability), ...]), ...]: the `top` most probable classes of
    each image file, most probable first, as `predict` prints them. `model, ckpt` come from
    checkpoint.load_model; the images are normalised with the checkpoint's mean and std."""
    mean, std = normalisation(ckpt)
    classes = ckpt.meta["classes"]
    k = min(top, model.num_classes)
    results = []
    # a chunk of files at a time: 128 images for the 224 model are 77 MB of floats
    for start in range(0, len(paths), DEFAULT_BATCH_SIZE):
        chunk = [os.fspath(p) for p in paths[start:start + DEFAULT_BATCH_SIZE]]
        x = load_images(chunk, model.input_shape[1], mean, std)      # (B, 3, S, S)
        probs = softmax(predict_logits(model, x))                     # (B, K)
        for path, p in zip(chunk, probs):
            best = np.argsort(-p, kind="stable")[:k]
            results.append((path, [(classes[j], float(p[j])) for j in best]))
    return results


def run_predict(args):
    model, ckpt = load_model(args.checkpoint, route=getattr(args, "route", "fast"))
    classes = ckpt.meta["classes"]
    results = predict_files(model, ckpt, args.images, args.top)
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


def register(subparsers):
    """Add the `evaluate` and `predict` commands to an argparse subparsers object.

    Each parser's `func` default is its handler: handler(args) -> exit code. Handlers raise
    TinyAlexError subclasses for user errors (the caller prints them as one line).
    """
    p = subparsers.add_parser(
        "evaluate", help="top-1/top-5, per-class accuracy and confusion matrix of a checkpoint",
        description="Score a checkpoint on a dataset: top-1 and top-5 accuracy, accuracy per "
                    "class and the confusion matrix.")
    add_checkpoint_argument(p)
    add_source_arguments(p, "an extracted cifar-10-batches-py directory (or a directory holding "
                            "one), a .tar.gz archive, or an image folder ROOT/train/<class>/* "
                            "[+ ROOT/test/<class>/*] or ROOT/<class>/* (its classes are matched "
                            "to the checkpoint's by name and may be a subset); default: the "
                            "official CIFAR-10 in --data-dir")
    add_split_argument(p, "test: the source's test split; val: the validation images held out "
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
    add_route_argument(p, ("fast", "readable"), "fast",
                       help="the layers that compute: fast (layers/fast/, default), readable (layers/) "
                            "or DIR, your own (python -m tinyalex exercise)")
    p.add_argument("--confusion-png", metavar="FILE", type=non_empty_path, default=None,
                   help="also draw the confusion matrix as a picture (PNG)")
    add_skip_bad_images_argument(p)
    p.set_defaults(func=run_evaluate)

    p = subparsers.add_parser(
        "predict", help="the most probable classes of image files",
        description="Classify image files of any size and mode (each is converted to RGB and "
                    "resized as the model needs) and print the top classes with probabilities.")
    add_checkpoint_argument(p)
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--top", type=positive_int, default=TOP_K, metavar="K",
                   help=f"how many classes to show per image (default {TOP_K})")
    p.add_argument("--json", action="store_true", help="print one JSON array instead of text")
    p.set_defaults(func=run_predict)
