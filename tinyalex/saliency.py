"""`python -m tinyalex saliency CKPT IMAGE... --out DIR`: where in an image a class comes from.

    python -m tinyalex saliency CKPT IMAGE... --out DIR [--class NAME] [--patch P] [--stride S] [--json]

For each image, DIR/<name>.png shows the image as the model sees it and two heat maps beside
it, both for the predicted class (or `--class NAME`):

Gradient (Simonyan, Vedaldi, Zisserman 2013, "Deep inside convolutional networks"). How much
each pixel moves the class's score z_c (its logit, before softmax):

    S(y, x) = max over colour channels ch of | dz_c / dx[ch, y, x] |

computed with the model's own backward pass: forward_tape, then backward_tape from the
upstream gradient dz/dlogits = one-hot(c) (the gradient of z_c = sum_j onehot_j z_j), which
returns dz_c/dx. One forward and one backward pass per image; the tests check it against
centred finite differences. The heat map runs from 0 to the 99th percentile of S (a few
pixels with very large gradients would otherwise leave the rest black).

Occlusion (Zeiler & Fergus 2013, "Visualizing and understanding convolutional networks",
section 4.2). A grey `patch` x `patch` square slid over the image in steps of `stride`
(and once more flush with the right and bottom edges); at each place, how much the class's
probability drops:

    drop(y0, x0) = p_c(image) - p_c(image with the square at (y0, x0) made grey)

"Grey" is the training mean colour, 0 after normalisation: the input carries no information
there. The occluded copies go through the network in batches. A pixel's value in the map is
the mean drop over the placements covering it: positive (red) where hiding the pixel costs
the class probability, negative (blue) where hiding it helps. Defaults: a quarter of the
image side for the patch (8 pixels for 32x32 inputs, 56 for 224), a sixteenth for the
stride (2 and 14), so 13 x 13 placements.

At chance. Both maps are drawn whatever the model knows: an untrained model's maps look as
structured as a trained one's. So when the model's top probability for an image is below
twice the uniform 1/K (`at_chance`; at most halfway from 1/K to 1 when K is small), the
picture says under its title that the model is at chance there and the maps show noise, not
evidence, and the command prints one warning line. The title always names the class
explained and its probability.
"""

import json
import os
import sys

import numpy as np

OCCLUSION_FILL = 0.0       # normalised units: the training split's mean colour
GRADIENT_PERCENTILE = 99   # top of the gradient heat map's scale
DEFAULT_BATCH_SIZE = 128
CHANCE_FACTOR = 2          # a top probability below this many times 1/K counts as chance
CHANCE_NOTE = "the model is at chance on this image: the maps show noise, not evidence"


# --------------------------------------------------------------------------------------
# The maps
# --------------------------------------------------------------------------------------

def input_gradient(model, x, classes=None):
    """dz_c/dx: the gradient of each image's class logit with respect to its input.

    Inputs: x (N, C, H, W) normalised images; classes, the class index of each image (N,),
    one for all, or None for each image's predicted class. Returns (dx (N, C, H, W) in the
    model's dtype, logits (N, K), classes (N,)). Evaluation mode (dropout off); the images
    do not interact, so one batch serves all.
    """
    from tinyalex.scoring import finite_outputs
    x = np.ascontiguousarray(x, model.dtype)
    with np.errstate(over="ignore", invalid="ignore"):       # checked just below
        logits, tape = model.forward_tape(x, train=False)
    logits = finite_outputs(np.array(logits))               # a copy: the buffer may be recycled
    if classes is None:
        classes = logits.argmax(axis=1)
    classes = np.broadcast_to(np.asarray(classes, np.int64), (len(x),))
    dlogits = np.zeros_like(logits)                          # (N, K): one-hot of each class
    dlogits[np.arange(len(x)), classes] = 1
    _, dx = model.backward_tape(tape, dlogits, need_dx=True)
    return np.array(dx), logits, classes


def gradient_map(dx):
    """S = max over channels of |dx|: (N, C, H, W) -> (N, H, W)."""
    return np.abs(dx).max(axis=1)


def chance_threshold(k):
    """The top probability below which a K-class model counts as at chance on an image:
    CHANCE_FACTOR / K (0.2 for 10 classes), but at most halfway from 1/K to 1 (0.75 for 2)."""
    return min(CHANCE_FACTOR / k, (1 + 1 / k) / 2)


def at_chance(probabilities):
    """True when one image's top class probability is below chance_threshold: the model
    hardly prefers any class, so its maps explain nothing."""
    p = np.asarray(probabilities)
    return bool(p.max() < chance_threshold(len(p)))


def patch_starts(side, patch, stride):
    """Top (or left) edges of the patch placements along one axis: 0, stride, 2 stride, ...,
    and side - patch so that the last pixels are covered too."""
    if not 1 <= patch <= side:
        raise ValueError(f"patch {patch} must be between 1 and the image side {side}")
    starts = list(range(0, side - patch + 1, stride))
    if starts[-1] != side - patch:
        starts.append(side - patch)
    return np.array(starts, np.int64)


def class_probability(model, x, cls, batch_size=DEFAULT_BATCH_SIZE):
    """p_cls for each of the normalised images x (N, C, H, W), batched."""
    from layers.loss import softmax
    from tinyalex.scoring import predict_logits
    return softmax(predict_logits(model, x, batch_size))[:, cls]


def occlusion(model, x, cls, *, patch, stride, batch_size=DEFAULT_BATCH_SIZE, fill=OCCLUSION_FILL):
    """The occlusion map of one image (Zeiler & Fergus).

    Inputs: x (C, H, W) normalised image; cls the class; patch, stride in pixels; fill the
    value of the grey square (normalised units). Returns (drops (GY, GX), one per placement,
    its square's top-left corner at (ys[i], xs[j]); per_pixel (H, W), the mean drop over
    the placements covering each pixel; p, the class probability of the whole image).
    """
    C, H, W = x.shape
    ys, xs = patch_starts(H, patch, stride), patch_starts(W, patch, stride)
    corners = [(y0, x0) for y0 in ys for x0 in xs]
    p = float(class_probability(model, x[None], cls)[0])
    drops = np.empty(len(corners))
    for start in range(0, len(corners), batch_size):
        chunk = corners[start:start + batch_size]
        occluded = np.repeat(x[None], len(chunk), axis=0)                # (B, C, H, W)
        for b, (y0, x0) in enumerate(chunk):
            occluded[b, :, y0:y0 + patch, x0:x0 + patch] = fill
        drops[start:start + len(chunk)] = p - class_probability(model, occluded, cls, batch_size)
    drops = drops.reshape(len(ys), len(xs))
    total = np.zeros((H, W))
    count = np.zeros((H, W))
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            total[y0:y0 + patch, x0:x0 + patch] += drops[i, j]
            count[y0:y0 + patch, x0:x0 + patch] += 1
    return drops, total / count, p         # every pixel is covered at least once


# --------------------------------------------------------------------------------------
# The picture
# --------------------------------------------------------------------------------------

# matplotlib's "inferno" (sequential) and "RdBu" reversed (diverging), at evenly spaced points
INFERNO = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)],
                   np.float64)
BLUE_WHITE_RED = np.array([(5, 48, 97), (67, 147, 195), (247, 247, 247), (214, 96, 77),
                           (103, 0, 31)], np.float64)


def colour_ramp(values, ramp):
    """values in [0, 1] (any shape) -> uint8 RGB (..., 3), linear between the ramp's colours."""
    position = np.clip(values, 0.0, 1.0) * (len(ramp) - 1)
    k = np.minimum(position.astype(np.int64), len(ramp) - 2)
    t = (position - k)[..., None]
    return np.rint(ramp[k] + (ramp[k + 1] - ramp[k]) * t).astype(np.uint8)


def saliency_png(image, grad, drops, path, *, title, class_name="the class", side=None,
                 note=None):
    """Draw the image, its gradient map and its occlusion map side by side, to a PNG.

    Inputs: image uint8 (h, w, 3) (the picture shown, resized to the maps' size);
    grad (H, W) >= 0, the gradient saliency; drops (H, W), the occlusion drops (blue below
    0, white at 0, red above, symmetric about 0); title, a line above; class_name for the
    caption. side: pixels per panel (default: the maps' size, at least 192). note: a second
    line under the title, in red (such as CHANCE_NOTE).
    """
    from PIL import Image, ImageDraw

    from tinyalex.pictures import INK, WHITE, _font, draw_text, _save_png
    H, W = grad.shape
    side = side or max(192, H)
    top_g = float(np.percentile(grad, GRADIENT_PERCENTILE)) or float(grad.max()) or 1.0
    top_d = float(np.max(np.abs(drops))) or 1.0
    panels = [   # (picture, caption lines)
        (Image.fromarray(np.asarray(image, np.uint8)).resize((side, side), Image.BICUBIC),
         ["image"]),
        (Image.fromarray(colour_ramp(grad / top_g, INFERNO)).resize((side, side), Image.NEAREST),
         ["gradient: max over RGB of |dz/dx|", f"0 (black) to {top_g:.2g} (yellow)"]),
        (Image.fromarray(colour_ramp(0.5 + 0.5 * drops / top_d, BLUE_WHITE_RED))
         .resize((side, side), Image.NEAREST),
         [f"occlusion: drop in p({class_name})", f"-{top_d:.2g} (blue) to +{top_d:.2g} (red)"]),
    ]
    gap, margin, line_h = 12, 14, 16
    title_h = 30 + (line_h if note else 0)
    width = 2 * margin + len(panels) * side + (len(panels) - 1) * gap
    height = margin + title_h + side + 6 + 2 * line_h + margin
    picture = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(picture)
    draw_text(draw, (width / 2, margin), title, font=_font(15), fill=INK, anchor="mt")
    if note:
        draw_text(draw, (width / 2, margin + 20), note, font=_font(12), fill=(214, 39, 40),
                  anchor="mt")
    for i, (panel, caption) in enumerate(panels):
        x = margin + i * (side + gap)
        picture.paste(panel, (x, margin + title_h))
        for j, line in enumerate(caption):
            draw_text(draw, (x + side / 2, margin + title_h + side + 6 + j * line_h), line,
                      font=_font(12), fill=INK, anchor="mt")
    _save_png(picture, path)


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------

def output_names(paths, out_dir):
    """DIR/<file name without extension>.png for each image, numbered when two names clash."""
    names, seen = [], {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0] or "image"
        seen[stem] = seen.get(stem, 0) + 1
        name = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
        names.append(os.path.join(out_dir, f"{name}.png"))
    return names


def run_saliency(args):
    from tinyalex.data.folder import read_image
    from tinyalex.data import eval_views
    from tinyalex.errors import TinyAlexError
    from layers.loss import softmax
    from tinyalex.checkpoint import load_model, normalisation
    from tinyalex.outfiles import check_new_file, out_dir, writing

    model, ckpt = load_model(args.checkpoint)
    mean, std = normalisation(ckpt, args.checkpoint)
    classes = ckpt.meta["classes"]
    if args.class_name is not None and args.class_name not in classes:
        raise TinyAlexError(f"unknown class {args.class_name!r}; the model knows: "
                            f"{', '.join(classes)}")
    side = model.input_shape[1]
    patch = args.patch or max(1, side // 4)
    stride = args.stride or max(1, side // 16)
    if patch > side:
        raise TinyAlexError(f"--patch {patch} is larger than the {side}x{side} input")
    if stride > patch:
        raise TinyAlexError(f"--stride {stride} is larger than --patch {patch}: some pixels would "
                            f"be covered by no patch (use a stride of at most {patch})")
    images = [read_image(path) for path in args.images]      # all readable, before any work
    # a folder the command makes is removed again if it fails before writing into it
    with out_dir(args.out):
        outputs = output_names(args.images, args.out)
        for out in outputs:
            check_new_file(out, inputs=[args.checkpoint, *args.images])

        results = []
        for path, pixels, out in zip(args.images, images, outputs):
            x = eval_views(pixels[None], "none", side, mean, std)[0]        # (1, C, S, S)
            wanted = classes.index(args.class_name) if args.class_name is not None else None
            dx, logits, used = input_gradient(model, x, wanted)
            cls, predicted = int(used[0]), int(np.argmax(logits[0]))
            p = softmax(logits)[0]
            grad = gradient_map(dx)[0]
            drops, per_pixel, _ = occlusion(model, x[0], cls, patch=patch, stride=stride,
                                            batch_size=args.batch_size)
            i, j = np.unravel_index(np.argmax(drops), drops.shape)
            y0, x0 = patch_starts(side, patch, stride)[i], patch_starts(side, patch, stride)[j]
            title = (f"{os.path.basename(path)}: {classes[cls]} (p {p[cls]:.2f})"
                     + ("" if cls == predicted else f"; predicted {classes[predicted]} "
                                                    f"(p {p[predicted]:.2f})"))
            with writing(out):
                saliency_png(pixels, grad, per_pixel, out, title=title, class_name=classes[cls],
                             note=CHANCE_NOTE if at_chance(p) else None)
            results.append({"image": path, "class": classes[cls], "probability": float(p[cls]),
                            "predicted": classes[predicted], "at_chance": at_chance(p),
                            "out": out,
                            "largest_drop": float(drops[i, j]),
                            "largest_drop_at": {"x": int(x0), "y": int(y0), "size": patch}})
    chance = [r["image"] for r in results if r["at_chance"]]
    if chance:
        which = chance[0] if len(chance) == 1 else f"{len(chance)} of the {len(results)} images"
        print(f"warning: the model is at chance on {which} (top probability below "
              f"{chance_threshold(len(classes)):.2f}): the maps show noise, not evidence",
              file=sys.stderr)
    if args.json:
        print(json.dumps(results))
        return 0
    for r in results:
        at = r["largest_drop_at"]
        print(f"{r['image']}: {r['class']} (p {r['probability']:.3f}, predicted "
              f"{r['predicted']}); occlusion: largest drop {r['largest_drop']:+.3g} with the "
              f"patch at x {at['x']}-{at['x'] + patch - 1}, y {at['y']}-{at['y'] + patch - 1}; "
              f"wrote {r['out']}")
    return 0


def register(subparsers):
    """Add the `saliency` command to an argparse subparsers object."""
    from tinyalex.argtypes import add_checkpoint_argument, non_empty_path, positive_int
    p = subparsers.add_parser(
        "saliency", allow_abbrev=False,
        help="heat maps of where in an image a class comes from (input gradient, occlusion)",
        description="For each image, draw the gradient of the class score with respect to the "
                    "pixels (Simonyan et al. 2013) and the drop in the class probability when "
                    "a grey square hides each part of the image (Zeiler & Fergus 2013), "
                    "beside the image.")
    add_checkpoint_argument(p)
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--out", metavar="DIR", type=non_empty_path, required=True,
                   help="directory for the pictures, DIR/<image name>.png (created if missing)")
    p.add_argument("--class", dest="class_name", metavar="NAME", default=None,
                   help="explain this class (default: each image's predicted class)")
    p.add_argument("--patch", type=positive_int, default=None, metavar="P",
                   help="side of the occluding square in input pixels (default: a quarter of "
                        "the input side, 8 for 32x32)")
    p.add_argument("--stride", type=positive_int, default=None, metavar="S",
                   help="step between placements of the square (default: a sixteenth of the "
                        "input side, 2 for 32x32)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
                   help=f"occluded images per forward pass (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--json", action="store_true", help="print one JSON array instead of text")
    p.set_defaults(func=run_saliency)
