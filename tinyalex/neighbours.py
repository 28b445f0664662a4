"""`python -m tinyalex neighbours CKPT --out fig4.png`: the AlexNet paper's Figure 4.

    python -m tinyalex neighbours CKPT [--data PATH] [--split test|val] [--count 8]
                                       [--seed S | --indices I,J,...] [--out PNG] [--json]

Section 6.1 of the paper looks inside the trained network in two ways, drawn side by side:

    left    test (or validation) images, each with its five most probable labels as bars
            (the correct label written under the image, its bar red when among the five)
    right   for each of those images, the six training images whose feature vectors
            in the last hidden layer are nearest to its own in Euclidean distance

The feature vector is fc7's output after its ReLU (`model.forward(x, upto="relu7")`, dropout
off): 4096 numbers for the `cifar` and `paper` models, 32 for `tiny`. Images the network
finds alike there are alike in what they show, not necessarily in their pixels: a dog seen
from the front and from the side, which no pixel distance would pair.

Which images. `--data` takes every source `evaluate` reads. The training images are the
training split the checkpoint's run learnt from: the source's training images less the
validation images, carved out again with the checkpoint's `val_size` and `seed` as
`evaluate --split val` does (45,000 of CIFAR-10's 50,000 by default). The query images come
from the test split (`--split test`, the default when the source has one) or from the
validation split (`--split val`, the default otherwise), `--count` of them drawn at random
(`--seed`), or the ones `--indices` names. Indices count from 0 in their split, in the
order the source lists its images.

Distances. For the query features a (Q, D) and a batch of training features b (B, D):

    |a_q - b_i|^2 = |a_q|^2 + |b_i|^2 - 2 a_q . b_i        (Q, B): one matrix product a b^T

in float32, the cheap way to compare every query with every training image. It subtracts
large, nearly equal numbers where a_q and b_i are close, so for b_i = a_q it returns a
rounding error of about 1e-7 |a_q|^2 instead of 0 (its square root: a few thousandths of
|a_q|, where a neighbour may lie a few hundredths away). So the formula only ranks: each
batch's k best candidates per query get their distances recomputed directly,
sqrt(sum_d (a_qd - b_id)^2), and those are merged into the running k best. Memory stays
bounded: the query features, one batch of training features and the (Q, B) matrix; the
training features are never all kept (45,000 x 4096 float32 would be 737 MB).
"""

import json
import math
import time

import numpy as np

FEATURE_LAYER = "relu7"    # fc7 after its ReLU: the paper's "last, 4096-dimensional hidden layer"
NEIGHBOURS = 6             # training images per query, as in the paper's figure
TOP_K = 5                  # labels shown per query
DEFAULT_COUNT = 8
DEFAULT_BATCH_SIZE = 128


# --------------------------------------------------------------------------------------
# Features and nearest neighbours
# --------------------------------------------------------------------------------------

def features(model, x):
    """fc7's ReLU output (N, hidden) float32 for normalised inputs x (N, C, H, W), dropout off."""
    h = model.forward(np.ascontiguousarray(x, model.dtype), upto=FEATURE_LAYER)
    return np.array(h, np.float32)    # a copy: the fast route's output may be a recycled buffer


def nearest(query, batches, k=NEIGHBOURS):
    """The k nearest rows of the training features to each query row, in Euclidean distance.

    Inputs: query (Q, D) float32; batches, an iterable of (start, b) with b (B, D) float32 the
    training features of rows start .. start+B-1, in any batch sizes. Returns (indices (Q, k)
    int64, distances (Q, k) float64), nearest first, ties broken by the lower index; -1 and
    inf where there were fewer than k training rows.
    """
    query = np.asarray(query, np.float32)
    Q = len(query)
    best_i = np.full((Q, k), -1, np.int64)
    best_d = np.full((Q, k), np.inf)
    q2 = np.einsum("qd,qd->q", query, query)[:, None]                # (Q, 1): |a_q|^2
    rows = np.arange(Q)[:, None]
    for start, b in batches:
        b = np.asarray(b, np.float32)
        if len(b) == 0:
            continue
        b2 = np.einsum("id,id->i", b, b)[None, :]                       # (1, B): |b_i|^2
        d2 = q2 + b2 - 2 * (query @ b.T)                                 # (Q, B), float32
        kk = min(k, len(b))
        cand = np.argpartition(d2, kk - 1, axis=1)[:, :kk]               # (Q, kk): k smallest, any order
        diff = query[:, None, :].astype(np.float64) - b[cand]            # (Q, kk, D)
        exact = np.sqrt(np.einsum("qkd,qkd->qk", diff, diff))           # (Q, kk): the direct distance
        merged_i = np.concatenate([best_i, cand + start], axis=1)        # (Q, k + kk)
        merged_d = np.concatenate([best_d, exact], axis=1)
        order = np.lexsort((merged_i, merged_d), axis=1)[:, :k]          # by distance, then index
        best_i, best_d = merged_i[rows, order], merged_d[rows, order]
    return best_i, best_d


def training_features(model, images, *, mean, std, batch_size=DEFAULT_BATCH_SIZE,
                      progress=False):
    """Yield (start, features of images[start:start+batch_size]) over uint8 (N, H, W, 3)
    images, normalised as in evaluation; a tqdm bar (on stderr) when progress."""
    from tqdm import tqdm

    from tinyalex.data import eval_views
    with tqdm(total=len(images), desc="fc7 features", unit="img", leave=False,
              disable=None if progress else True) as bar:
        for start in range(0, len(images), batch_size):
            x = eval_views(images[start:start + batch_size], "none", model.input_shape[1],
                           mean, std)[0]
            yield start, features(model, x)
            bar.update(len(x))


def nearest_training_images(model, queries, train_images, *, mean, std, k=NEIGHBOURS,
                            batch_size=DEFAULT_BATCH_SIZE, progress=False):
    """For uint8 query images (Q, H, W, 3): (indices (Q, k) into train_images, distances)."""
    from tinyalex.data import eval_views
    x = eval_views(queries, "none", model.input_shape[1], mean, std)[0]
    query = np.concatenate([features(model, x[s:s + batch_size])
                            for s in range(0, len(x), batch_size)])
    return nearest(query, training_features(model, train_images, mean=mean, std=std,
                                            batch_size=batch_size, progress=progress), k)


# --------------------------------------------------------------------------------------
# Which images
# --------------------------------------------------------------------------------------

def load_images_for(ckpt, path, *, data, data_dir, split, skip_bad_images=False):
    """The query split and the training split, labels in the checkpoint's class order.

    Returns (query images, query labels, training images, training labels, description,
    split): uint8 (N, H, W, 3) images, int64 labels, and the query split used ("test" or
    "val"). See the module docstring.
    """
    from tinyalex.checkpoint import model_labels
    from tinyalex.data import load_dataset, recorded_source
    from tinyalex.errors import CheckpointError, DataError
    config = ckpt.meta.get("config") or {}
    val_size, seed = config.get("val_size", 0), config.get("seed", 0)
    for key, value in (("val_size", val_size), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(f"checkpoint {path} has config[{key!r}] {value!r}; "
                                  f"expected a non-negative integer")
    data, data_dir, how = recorded_source(ckpt.meta, data, data_dir)
    ds = load_dataset(data, data_dir=data_dir, val_size=val_size, seed=seed,
                      skip_bad_images=skip_bad_images)
    if split is None:
        split = "test" if ds.test_x is not None else "val"
    if split == "test" and ds.test_x is None:
        raise DataError(f"{ds.source} has no test split; pass --split val for the "
                        f"validation images held out in training")
    if split == "val" and len(ds.val_y) == 0:
        raise DataError(f"checkpoint {path} was trained without a validation split "
                        f"(val_size 0) and {ds.source} has no test split: no images the "
                        f"model did not train on")
    query_x, query_y = (ds.test_x, ds.test_y) if split == "test" else (ds.val_x, ds.val_y)

    to_model = model_labels(ckpt, ds)
    what = (f"{ds.source}{how}: {split} split as queries ({len(query_y)} images), the training "
            f"split as the images searched (val_size {val_size}, seed {seed})")
    return query_x, to_model[query_y], ds.train_x, to_model[ds.train_y], what, split


def pick_queries(n, count, seed, indices=None):
    """Indices of the query images: `indices` as given (checked), else `count` (at most n)
    drawn at random without replacement, seeded, in increasing order."""
    from tinyalex.errors import TinyAlexError
    if indices is not None:
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise TinyAlexError(f"--indices {bad[0]} is out of range: the split has {n} "
                                f"images (0..{n - 1})")
        return np.asarray(indices, np.int64)
    pick = np.random.default_rng(seed).permutation(n)[:min(count, n)]
    return np.sort(pick)


def index_list(text):
    """argparse type: '3,17,42' -> [3, 17, 42]."""
    import argparse
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one index")
    return values


# --------------------------------------------------------------------------------------
# The picture
# --------------------------------------------------------------------------------------

BAR = (95, 120, 200)           # a label's bar
CORRECT = (214, 39, 40)        # the correct label's bar (the paper's red)
TRACK = (232, 232, 236)        # the bar's background
FRAME = (214, 39, 40)
SPLIT_NAMES = {"test": "test", "val": "validation"}     # the query split, as the figure names it


def figure4_png(queries, labels, top, neighbour_images, neighbour_labels, classes, path, *,
                scale=3, title=None, split="test"):
    """Draw the paper's Figure 4 to a PNG: top-5 bars on the left, nearest neighbours on the right.

    Inputs:
    - queries: uint8 (Q, H, W, 3); labels: (Q,) their correct class indices.
    - top: Q lists of (class index, probability), most probable first.
    - neighbour_images: uint8 (Q, k, H, W, 3); neighbour_labels: (Q, k) class indices.
    - classes: the class names; path: the PNG (written atomically); scale: pixel enlargement.
    - split: where the queries come from, "test" or "val", named in the headings.
    Left, two columns of queries, each with its correct label under it and its top labels
    as bars (the correct one red). Right, a row per query: the query, a gap, its k
    neighbours; a neighbour of the query's class is underlined. A line under the title
    says what the red means.
    """
    from PIL import Image, ImageDraw

    from tinyalex.pictures import INK, WHITE, _font, draw_text, _save_png, _text_size
    queries = np.asarray(queries)
    Q, H, W = queries.shape[:3]
    k = neighbour_images.shape[1]
    side = H * scale
    gap, margin = 6, 16
    label_font, bar_font, title_font = _font(13), _font(11), _font(16)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    name_w = max(_text_size(probe, c, bar_font)[0] for c in classes)
    rows_top = len(top[0]) if Q else 0
    bar_h = 13
    # left half: cells of [image; correct label; bars], two columns
    cell_w = max(side, name_w + 4 + 120)
    cell_h = side + 20 + rows_top * (bar_h + 2) + 14
    cols = 2 if Q > 1 else 1
    left_rows = math.ceil(Q / cols)
    left_w = cols * cell_w + (cols - 1) * 2 * gap
    # right half: a row of [query | k neighbours] per query
    row_h = side + 8
    right_w = side + 3 * gap + k * (side + gap)
    title_h = 34 + 18 + 20                 # the title, the legend line, the halves' headings
    width = margin + left_w + 4 * margin + right_w + margin
    height = title_h + margin + max(left_rows * cell_h, Q * row_h) + margin
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)

    def paste(array, x, y):
        tile = Image.fromarray(np.ascontiguousarray(array)).resize((side, side), Image.NEAREST)
        image.paste(tile, (int(x), int(y)))

    title = title or (f"Figure 4: top-{len(top[0]) if Q else 5} labels (left), the {k} nearest "
                      f"training images in fc7's feature space (right)")
    draw_text(draw, (width / 2, 10), title, font=title_font, fill=INK, anchor="mt")
    draw_text(draw, (width / 2, 32), "red bar: the correct label (left); red underline: a "
              "neighbour of the query's class (right)", font=label_font, fill=CORRECT,
              anchor="mt")
    queries_name = SPLIT_NAMES[split]
    y0 = title_h + margin
    x_right = margin + left_w + 4 * margin
    heading_y = y0 - 6
    draw_text(draw, (margin + left_w / 2, heading_y),
              f"{queries_name} images and their top labels", font=label_font, fill=INK,
              anchor="ms")
    draw_text(draw, (x_right + side / 2, heading_y), f"{queries_name} image", font=label_font,
              fill=INK, anchor="ms")
    draw_text(draw, (x_right + side + 3 * gap + (k * (side + gap) - gap) / 2, heading_y),
              f"{k} nearest training images (fc7 features)", font=label_font, fill=INK,
              anchor="ms")
    for q in range(Q):
        r, c = divmod(q, cols)
        x, y = margin + c * (cell_w + 2 * gap), y0 + r * cell_h
        paste(queries[q], x + (cell_w - side) / 2, y)
        y += side + 3
        draw_text(draw, (x + cell_w / 2, y), classes[labels[q]], font=label_font, fill=INK,
                  anchor="mt")
        y += 18
        for j, (cls, p) in enumerate(top[q]):
            by = y + j * (bar_h + 2)
            bx = x + name_w + 4
            draw.rectangle([bx, by, x + cell_w - 1, by + bar_h - 1], fill=TRACK)
            colour = CORRECT if cls == labels[q] else BAR
            draw.rectangle([bx, by, bx + max(1.0, p * (x + cell_w - 1 - bx)), by + bar_h - 1],
                           fill=colour)
            draw_text(draw, (bx - 3, by + bar_h / 2), classes[cls], font=bar_font,
                      fill=CORRECT if cls == labels[q] else INK, anchor="rm")
    draw.line([(x_right - 2 * margin, y0), (x_right - 2 * margin, height - margin)],
              fill=(200, 200, 200), width=1)
    for q in range(Q):
        y = y0 + q * row_h
        paste(queries[q], x_right, y)
        for j in range(k):
            x = x_right + side + 3 * gap + j * (side + gap)
            paste(neighbour_images[q, j], x, y)
            if neighbour_labels[q, j] == labels[q]:      # same class as the query: underline
                draw.rectangle([x, y + side + 1, x + side - 1, y + side + 3], fill=FRAME)
    _save_png(image, path)


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------

def run_neighbours(args):
    from layers.loss import softmax
    from tinyalex.checkpoint import load_model, normalisation
    from tinyalex.scoring import predict_logits
    from tinyalex.outfiles import check_new_file, writing

    model, ckpt = load_model(args.checkpoint)
    mean, std = normalisation(ckpt, args.checkpoint)
    if args.out:
        check_new_file(args.out, inputs=[args.checkpoint])
    classes = ckpt.meta["classes"]
    query_x, query_y, train_x, train_y, where, split = load_images_for(
        ckpt, args.checkpoint, data=args.data, data_dir=args.data_dir, split=args.split,
        skip_bad_images=args.skip_bad_images)
    picked = pick_queries(len(query_y), args.count, args.seed, args.indices)
    queries, labels = query_x[picked], query_y[picked]
    if args.limit_train is not None and args.limit_train < len(train_y):
        searched = np.sort(np.random.default_rng([args.seed, 1]).permutation(len(train_y))
                           [:args.limit_train])
    else:
        searched = np.arange(len(train_y))

    from tinyalex.data import eval_views
    x = eval_views(queries, "none", model.input_shape[1], mean, std)[0]
    probs = softmax(predict_logits(model, x, args.batch_size))             # (Q, K)
    k_top = min(TOP_K, model.num_classes)
    top = [[(int(j), float(p[j])) for j in np.argsort(-p, kind="stable")[:k_top]] for p in probs]

    start = time.perf_counter()
    found, dist = nearest_training_images(model, queries, train_x[searched], mean=mean, std=std,
                                          batch_size=args.batch_size, progress=True)
    seconds = time.perf_counter() - start
    found = np.where(found >= 0, searched[np.maximum(found, 0)], -1)       # training-split indices

    if args.out:
        neighbour_images = train_x[np.maximum(found, 0)]                    # (Q, k, H, W, 3)
        with writing(args.out):
            figure4_png(queries, labels, top, neighbour_images, train_y[np.maximum(found, 0)],
                        classes, args.out, split=split)
    report = {
        "checkpoint": args.checkpoint, "model": model.name, "data": where,
        "feature": f"{FEATURE_LAYER} ({model.params['fc7.w'].shape[0]} values)",
        "training_images": int(len(searched)), "seconds": round(seconds, 2),
        "queries": [{
            "index": int(i), "label": classes[y],
            "top5": [{"class": classes[c], "probability": p} for c, p in t],
            "neighbours": [{"index": int(j), "label": classes[train_y[j]], "distance": float(d)}
                           for j, d in zip(f, ds) if j >= 0]}
            for i, y, t, f, ds in zip(picked, labels, top, found, dist)],
        "out": args.out}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.checkpoint}: {model.name} model, {model.num_classes} classes")
    print(f"data: {where}")
    print(f"searched {len(searched):,} training images in {seconds:.1f} s "
          f"({len(searched) / max(seconds, 1e-9):.0f} img/s), features {report['feature']}")
    for entry in report["queries"]:
        guesses = ", ".join(f"{t['class']} {100 * t['probability']:.0f}%" for t in entry["top5"])
        print(f"query {entry['index']} ({entry['label']}): {guesses}")
        print("  nearest: " + ", ".join(f"{n['index']} {n['label']} ({n['distance']:.3g})"
                                         for n in entry["neighbours"]))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def register(subparsers):
    """Add the `neighbours` command to an argparse subparsers object."""
    from tinyalex.argtypes import add_checkpoint_argument, add_seed_argument, non_empty_path, positive_int
    from tinyalex.data.args import add_skip_bad_images_argument, add_source_arguments, add_split_argument
    p = subparsers.add_parser(
        "neighbours", allow_abbrev=False,
        help="the paper's Figure 4: top-5 labels of test (or validation) images and their "
             "nearest training images in fc7's feature space",
        description="Draw Figure 4 of the AlexNet paper: test (or validation) images with "
                    "their five most probable labels, and for each the six training images "
                    "nearest to it in the last hidden layer (fc7 after ReLU, Euclidean "
                    "distance).")
    add_checkpoint_argument(p)
    add_source_arguments(p, "the data the model was trained on: a cifar-10-batches-py directory, "
                            "a .tar.gz archive or an image folder (as for evaluate); default: the "
                            "official CIFAR-10 in --data-dir")
    add_split_argument(p, "where the query images come from: test (the default when the source "
                        "has a test split) or val (the validation images held out in "
                        "training, carved out with the checkpoint's val_size and seed)")
    p.add_argument("--count", type=positive_int, default=DEFAULT_COUNT, metavar="N",
                   help=f"query images, drawn at random (default {DEFAULT_COUNT})")
    add_seed_argument(p, "the random draw")
    p.add_argument("--indices", type=index_list, default=None, metavar="I,J,...",
                   help="these query images (indices into the split) instead of a random draw")
    p.add_argument("--limit-train", type=positive_int, default=None, metavar="N",
                   help="search only N training images, a seeded random sample (quick runs)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
                   help=f"images per forward pass (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--out", metavar="PNG", type=non_empty_path, default=None, help="draw the figure to this PNG")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: indices, labels, top-5 and distances")
    add_skip_bad_images_argument(p)
    p.set_defaults(func=run_neighbours)
