"""What each training and test image looks like when it reaches the model.

A *placement* says, for every image of a batch, which S x S window of the (padded or
resized) source it becomes, whether it is mirrored, and which colour shift is added;
:func:`render` turns uint8 NHWC sources and a placement into a float32 NCHW batch,
normalised with the training split's mean and std. ``S`` is the model's input side.

Training (``--augment``), source side H = 32:

    S = H (the 32x32 models)                    S != H (the 224x224 model)
    none   the image                            bilinear resize H -> S
    flip   the image, random mirror             bilinear resize H -> S, random mirror
    basic  random HxH crop of the image zero-   bilinear resize H -> S, random mirror
           padded by H/8 = 4, random mirror
    paper  basic + PCA lighting                 the paper: resize H -> T = S*256/224 (256),
                                                random SxS crop, random mirror, PCA lighting

Cutout (``--cutout K``, DeVries and Taylor 2017), after any of these: a K x K square of each
training image, centred on a random pixel (so it may hang over the edge and show less), is
set to 0 after normalisation: the training set's mean colour. The draws come after the
placement's, so a run without cutout sees the very same batches as before the option existed.

PCA lighting (Krizhevsky et al. 2012, section 4.1) adds ``sum_i alpha_i lambda_i p_i`` to
every pixel of an image, ``alpha_i ~ N(0, 0.1)`` drawn per image each time it is used,
``lambda_i, p_i`` the eigenvalues/vectors of the training set's RGB covariance. The scale
matters (eigenvalues grow with the square of the pixel unit): like fb.resnet.torch we use
pixels in 0..1, which shifts colours by about 1% of the range.

Test-time views (:func:`eval_views`), each a list of batches whose softmax outputs the
caller averages:

    none    one view: the image (S = H), or resized to S
    flip    two views: that and its mirror
    10crop  the four corner crops and the centre crop, then the same five mirrored, in
            that order. For S != H (the paper): of the image resized to T = 256, the
            paper's 224 crops. For S = H: HxH windows of the image zero-padded by 4, at the
            corners and the centre (the centre one is the image itself). These are the
            extreme positions of the training crops, so every view is one the model saw in
            training; cropping smaller windows and resizing them back would show the model
            a magnification it never trained on.
"""
from typing import NamedTuple

import numpy as np

from tinyalex.errors import DataError

from .folder import read_image
from .pixels import crop_flip_normalize, resize_crop_flip_normalize, resize_table

AUGMENTS = ("none", "flip", "basic", "paper")
DEFAULT_AUGMENT = "flip"    # mirrors alone: in ten epochs crops cost more than they help (docs/training.md)
VIEW_MODES = ("none", "flip", "10crop")
# how reports and pictures name each test-time augmentation
VIEW_NAMES = {"none": "no TTA (the centre image)", "flip": "flip TTA (image + mirror)",
              "10crop": "10-crop TTA (4 corners + centre, and their mirrors)"}
LIGHTING_STD = 0.1          # std of the alphas of PCA lighting
PAPER_RESIZE = 256 / 224    # the paper resizes to 256 and crops 224


class Placement(NamedTuple):
    """Where each output image of a batch comes from (B images)."""

    resized: int          # T: side the source is resized to; 0 = not resized (S = H)
    pad: int              # zero padding around an unresized source
    offsets: np.ndarray   # (B, 2) int64: (top, left) of the S x S window in the padded/resized image
    flips: np.ndarray     # (B,) bool: mirror left-right
    delta: np.ndarray     # (B, 3) float32: colour shift in 0..1 units (PCA lighting), else 0


def crop_pad(side: int) -> int:
    """Zero padding for random crops of an unresized image: 4 for CIFAR's 32."""
    return side // 8


def paper_side(size: int) -> int:
    """Side the paper resizes to before cropping ``size``: 256 for 224."""
    return int(round(size * PAPER_RESIZE))


def train_placement(rng: np.random.Generator, batch: int, *, side: int, size: int,
                    augment: str, pca=None) -> Placement:
    """Random placement of a training batch (see the table in the module docstring)."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    no_flip = np.zeros(batch, bool)
    zero = np.zeros((batch, 2), np.int64)
    no_shift = np.zeros((batch, 3), np.float32)
    flips = no_flip if augment == "none" else rng.random(batch) < 0.5
    if augment in ("none", "flip"):                  # the whole image (upscaled for S != H)
        return Placement(0 if size == side else size, 0, zero, flips, no_shift)
    if size == side:
        pad = crop_pad(side)
        resized, offsets = 0, rng.integers(0, 2 * pad + 1, size=(batch, 2))
    elif augment == "basic":
        pad, resized, offsets = 0, size, zero
    else:
        pad, resized = 0, paper_side(size)
        offsets = rng.integers(0, resized - size + 1, size=(batch, 2))
    delta = no_shift
    if augment == "paper":
        if pca is None:
            raise ValueError("augment='paper' needs pca=(eigval, eigvec) for the lighting")
        eigval, eigvec = (np.asarray(a, np.float64) for a in pca)
        alpha = rng.normal(0.0, LIGHTING_STD, size=(batch, 3))
        delta = ((alpha * eigval) @ eigvec.T).astype(np.float32)   # row b: sum_i a_bi l_i p_i
    return Placement(resized, pad, offsets.astype(np.int64), flips, delta)


def cutout_squares(rng: np.random.Generator, batch: int, *, size: int, cutout: int) -> np.ndarray:
    """(B, 4) int64 rows (top, bottom, left, right): the square of each image that cutout
    sets to 0, rows top..bottom-1 and columns left..right-1, clipped to the S x S image."""
    centres = rng.integers(0, size, size=(batch, 2))
    low = np.clip(centres - cutout // 2, 0, size)
    high = np.clip(centres - cutout // 2 + cutout, 0, size)
    return np.stack([low[:, 0], high[:, 0], low[:, 1], high[:, 1]], axis=1).astype(np.int64)


def apply_cutout(x: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """x (B, C, S, S) with each image's square (cutout_squares) set to 0, in place."""
    for b, (top, bottom, left, right) in enumerate(squares):
        x[b, :, top:bottom, left:right] = 0.0
    return x


def view_placements(batch: int, *, side: int, size: int, mode: str) -> list:
    """The fixed placements of the test-time views (see the module docstring)."""
    if mode not in VIEW_MODES:
        raise ValueError(f"view mode must be one of {VIEW_MODES}, got {mode!r}")
    no_shift = np.zeros((batch, 3), np.float32)

    def place(resized, pad, top, left, flip):
        offsets = np.tile(np.array([[top, left]], np.int64), (batch, 1))
        return Placement(resized, pad, offsets, np.full(batch, flip), no_shift)

    plain = 0 if size == side else size
    if mode == "none":
        return [place(plain, 0, 0, 0, False)]
    if mode == "flip":
        return [place(plain, 0, 0, 0, False), place(plain, 0, 0, 0, True)]
    if size == side:
        pad = crop_pad(side)
        resized, last = 0, 2 * pad
    else:
        pad, resized = 0, paper_side(size)
        last = resized - size
    corners = [(0, 0), (0, last), (last, 0), (last, last), (last // 2, last // 2)]
    return ([place(resized, pad, t, l, False) for t, l in corners]
            + [place(resized, pad, t, l, True) for t, l in corners])


def render(images: np.ndarray, index: np.ndarray, placement: Placement, *, size: int,
           mean, std) -> np.ndarray:
    """Batch (B, 3, size, size) float32, C-contiguous, of ``images[index]`` placed and normalised."""
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    bias = ((placement.delta - mean) / std).astype(np.float32)       # (B, 3)
    index = np.ascontiguousarray(index, np.int64)
    out = np.empty((len(index), 3, size, size), np.float32)
    if placement.resized == 0:
        if images.shape[1] != size or images.shape[2] != size:
            raise ValueError(f"images are {images.shape[1]}x{images.shape[2]}, not {size}x{size}")
        crop_flip_normalize(images, index, placement.pad, placement.offsets, placement.flips,
                            scale, bias, out)
    else:
        ytab = resize_table(images.shape[1], placement.resized)
        xtab = resize_table(images.shape[2], placement.resized)
        resize_crop_flip_normalize(images, index, *ytab, *xtab, size, placement.offsets,
                                   placement.flips, scale, bias, out)
    return out


def check_images(images: np.ndarray, name: str = "images") -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"{name} must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"{name} must be square, got {images.shape[1]}x{images.shape[2]}")
    return np.ascontiguousarray(images)


def eval_views(images, mode="none", image_size=32, mean=None, std=None) -> list:
    """Test-time views of a batch: a list of float32 (N, 3, S, S) arrays, one per view.

    ``images``: uint8 (N, H, W, 3). ``mode``: "none" (1 view), "flip" (2), "10crop" (10).
    Average the model's softmax over the views. Pass a batch at a time: for the 224 model
    ten views of 128 images take 770 MB.
    """
    images = check_images(images)
    if mean is None or std is None:
        raise ValueError("eval_views needs the training mean and std")
    index = np.arange(len(images))
    return [render(images, index, p, size=image_size, mean=mean, std=std)
            for p in view_placements(len(images), side=images.shape[1], size=image_size,
                                     mode=mode)]


def load_images(paths, image_size=32, mean=None, std=None) -> np.ndarray:
    """Image files of any size and mode -> float32 (N, 3, S, S), as the model saw them in evaluation.

    Each file is decoded to RGB and resized to 32x32 like the image-folder loader does, then
    (for S = 224) upscaled like the validation images. Unreadable file: DataError naming it.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise DataError("no image files given")
    images = np.stack([read_image(p) for p in paths])                # (N, 32, 32, 3)
    return eval_views(images, "none", image_size, mean, std)[0]
