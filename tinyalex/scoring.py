"""Scores of a model's predictions, computed in one place for every command that scores:
training's validation and final scores (`train.py`), `evaluate`, `torch-train`.

    predict_logits(model, x, batch_size)          batched forward pass, dropout off
    finite_outputs(logits)                        logits, or an error if some are NaN or infinite
    scores(probs, labels)                         {"top1", "top5", "loss"} of probabilities
    score_loader(model, loader, tta, desc)        (loss, top1, top5) over a BatchLoader
    score_loader_views(model, loader, desc)       the same for the centre image and for flip
                                                  TTA, in one pass
    score_arrays(model, images, labels, *, mean, std, image_size, tta, batch_size)
        -> {"n", "top1", "top5", "loss", "per_class", "counts", "confusion"}

    top-1     the fraction of images whose most probable class is the true one
    top-5     the fraction whose true class is among the five most probable (among all of
              them when the model has 5 classes or fewer, which makes it 1)
    loss      the mean cross-entropy -log p(true class), in float64, p floored at the
              smallest positive float64 (a model sure of another class is not a diverged
              model); NaN when a logit is not finite
    confusion matrix[i, j] = images of true class i predicted as class j; a row sums to the
              number of images of class i, its diagonal entry over that is the class's
              accuracy

With test-time augmentation the probabilities are the softmax averaged over the views of each
image (`tinyalex.data.eval_views`): `flip` the image and its mirror.
"""

import numpy as np
from tqdm import tqdm

from layers.loss import softmax
from tinyalex.data import eval_views
from tinyalex.data.transforms import VIEW_MODES
from tinyalex.errors import CheckpointError, DataError

DEFAULT_BATCH_SIZE = 128
TOP_K = 5                      # the paper's top-5 error
NUM_VIEWS = {"none": 1, "flip": 2, "10crop": 10}   # views per image of eval_views, by mode


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
    return finite_outputs(out)


def finite_outputs(logits):
    """`logits` (N, K), or a CheckpointError if a row holds NaN or infinite values: the weights
    overflow (every command that runs the model says so in these words)."""
    broken = ~np.isfinite(logits).all(axis=1)
    if broken.any():
        raise CheckpointError(f"the model's outputs are NaN or infinite for {broken.sum()} of "
                              f"{len(logits)} inputs: its weights give no usable predictions "
                              f"(did the run that made them diverge?)")
    return logits


def scores(probs, labels):
    """{"top1", "top5", "loss"} of class probabilities (N, K) against labels (N,)."""
    k = min(TOP_K, probs.shape[1])
    top_k = np.argpartition(-probs, k - 1, axis=1)[:, :k]              # (N, k), unordered
    true_p = probs[np.arange(len(labels)), labels]
    return {"top1": float(np.mean(probs.argmax(axis=1) == labels)),
            "top5": float(np.mean((top_k == labels[:, None]).any(axis=1))),
            "loss": float(np.mean(-np.log(np.maximum(true_p, np.finfo(np.float64).tiny))))}


def score_loader(model, loader, tta="none", desc=None):
    """(loss, top-1, top-5) over a loader's batches (eval mode: no dropout). `model` is anything
    with forward(images) -> logits in NumPy (torch-train passes PyTorch's network).
    tta "flip": the softmax averaged over each image and its mirror image, as score_arrays
    scores it (the loader's normalisation is per channel, so mirroring after it is the same).
    A non-finite logit (a diverged model) makes the loss NaN. `desc`: show a progress bar
    (on stderr) with that label."""
    return score_loader_views(model, loader, desc, views=(tta,))[tta]


def score_loader_views(model, loader, desc=None, views=("none", "flip")):
    """{tta: (loss, top-1, top-5)} for each of `views` ("none", "flip"), in one pass over the
    loader: flip's first view is the centre image, so both cost two forward passes."""
    mirror = "flip" in views
    probs = {tta: [] for tta in views}
    labels = []
    bar = tqdm(total=len(loader), desc=desc, unit="batch", leave=False, disable=desc is None)
    with bar:
        for x, y in loader.epoch(0):
            with np.errstate(over="ignore", invalid="ignore"):   # a diverged model: NaN, below
                logits = [model.forward(x)] + ([model.forward(np.ascontiguousarray(x[..., ::-1]))]
                                               if mirror else [])
                p = [softmax(view_logits) for view_logits in logits]
            broken = ~np.all([np.isfinite(view_logits).all(axis=1) for view_logits in logits], axis=0)
            for tta in views:
                chosen = p[0] if tta == "none" else (p[0] + p[1]) / 2
                chosen[broken] = np.nan
                probs[tta].append(chosen)
            labels.append(y)
            bar.update(1)
    if not labels:
        return {tta: (float("nan"),) * 3 for tta in views}
    result = {}
    for tta in views:
        with np.errstate(invalid="ignore"):
            r = scores(np.concatenate(probs[tta]), np.concatenate(labels))
        result[tta] = (r["loss"], r["top1"], r["top5"])
    return result


# which weights an end-of-run line scored (train.py and torch-train)
SCORED_WEIGHTS = {"final": "final parameters", "average": "the average of the weights, --ema",
                  "trained": "the final weights as trained"}


def views_line(views, weights="final"):
    """The end-of-run line of one split from score_loader_views' {"none": ..., "flip": ...}:
    flip TTA first (the headline), then the centre image, then which weights were scored."""
    (loss, top1, top5), (loss_flip, top1_flip, top5_flip) = views["none"], views["flip"]
    return (f"top-1 {100 * top1_flip:.2f}% with flip TTA (image + mirror), {100 * top1:.2f}% centre "
            f"only; top-5 {100 * top5_flip:.2f}% / {100 * top5:.2f}%; loss {loss_flip:.4f} / "
            f"{loss:.4f} ({SCORED_WEIGHTS[weights]})")


def score_arrays(model, images, labels, *, mean, std, image_size=None, tta="none",
                    batch_size=DEFAULT_BATCH_SIZE, progress=False):
    """Score a model on uint8 images.

    Inputs:
    - model: an AlexNet (e.g. from evaluate.load_model).
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

    result = scores(probs, labels)
    predicted = probs.argmax(axis=1)                                   # (N,)
    confusion = np.zeros((K, K), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    counts = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, np.diag(confusion) / counts, np.nan)
    result.update(n=int(len(labels)), per_class=per_class, counts=counts, confusion=confusion)
    if tta == "flip":
        result["centre"] = scores(first, labels)
    return result
