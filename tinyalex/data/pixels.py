"""Pixel kernels of the data pipeline: Numba loops, each with a plain NumPy reference.

Dimensions: ``N`` images in the source array, ``B`` images in a batch, ``H, W`` source
height and width (32 for CIFAR-10), ``S`` output side, ``T`` side of the resized image a
crop is taken from (``T >= S``), ``C = 3`` colour channels.

Source images are uint8 NHWC (the layout images are decoded in); batches come out float32
NCHW (the layout the model reads), normalised as ``x = v * scale[c] + bias[b, c]`` where
``v`` is the 0..255 pixel value. With ``scale = 1 / (255 std)`` and
``bias = (delta - mean) / std`` this is ``(v / 255 + delta - mean) / std``: the usual
per-channel normalisation plus an optional per-image colour shift ``delta`` (the paper's
PCA lighting, in 0..1 pixel units).

    fast (Numba, nogil)                 plain reference (NumPy)
    crop_flip_normalize                 crop_flip_normalize_reference
    resize_crop_flip_normalize          resize_crop_flip_normalize_reference
    channel_moments                     channel_moments_reference

The kernels release the GIL (``nogil=True``), so the loader's background thread runs them
while the main thread trains. They run on one core (no ``parallel=True``): the model
already uses both.

Bilinear resizing uses half-pixel centres ("align_corners=False"): output pixel ``i`` of
``T`` samples the source at ``(i + 0.5) * H / T - 0.5``, clamped to the image. This is what
``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)`` and Pillow's
bilinear *up*-scaling compute. (For down-scaling Pillow widens the filter to antialias; we
do not, so a resize to a smaller side is only exact for factors of 2, where it averages
2x2 blocks.)
"""
from typing import NamedTuple

import numpy as np
from numba import njit


class ResizeTable(NamedTuple):
    """Bilinear taps along one axis: output ``i`` = ``(1-w[i]) * in[lo[i]] + w[i] * in[hi[i]]``."""

    lo: np.ndarray  # (T,) int64, left/top source index
    hi: np.ndarray  # (T,) int64, right/bottom source index (= lo + 1, clamped)
    w: np.ndarray   # (T,) float32, weight of ``hi``


def resize_table(in_size: int, out_size: int) -> ResizeTable:
    """Taps for resizing ``in_size`` pixels to ``out_size`` with half-pixel centres."""
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    src = np.clip(src, 0.0, in_size - 1)      # clamp to the edge pixels
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    return ResizeTable(lo, hi, (src - lo).astype(np.float32))


# --------------------------------------------------------------------------------------
# Crop of the zero-padded image, optional mirror, normalise: the 32x32 training transform.
# --------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def crop_flip_normalize(src, index, pad, offsets, flips, scale, bias, out):
    """out[b] = normalised (mirrored) HxW crop at ``offsets[b]`` of ``src[index[b]]`` padded by ``pad``.

    Inputs: src (N, H, W, C) uint8; index (B,) int64; pad int; offsets (B, 2) int64, the
    (top, left) corner of the crop in the padded image, each in [0, 2*pad]; flips (B,) bool;
    scale (C,) float32; bias (B, C) float32. Output: out (B, C, H, W) float32, written in place.
    Padding pixels are black (v = 0), as in torchvision's ``RandomCrop(32, padding=4)``.
    """
    B = index.shape[0]
    H, W, C = src.shape[1], src.shape[2], src.shape[3]
    for b in range(B):
        n = index[b]
        dy = offsets[b, 0] - pad
        dx = offsets[b, 1] - pad
        for c in range(C):
            s = scale[c]
            z = bias[b, c]                      # value of a padding pixel
            for i in range(H):
                y = i + dy
                if y < 0 or y >= H:
                    for j in range(W):
                        out[b, c, i, j] = z
                    continue
                for j in range(W):
                    x = (W - 1 - j if flips[b] else j) + dx
                    if x < 0 or x >= W:
                        out[b, c, i, j] = z
                    else:
                        out[b, c, i, j] = src[n, y, x, c] * s + z


def crop_flip_normalize_reference(src, index, pad, offsets, flips, scale, bias):
    """Plain NumPy version of :func:`crop_flip_normalize` (returns a new array)."""
    H, W = src.shape[1:3]
    padded = np.pad(src[index], ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # (B, H+2p, W+2p, C)
    out = np.empty((len(index), src.shape[3], H, W), np.float32)
    for b, (top, left) in enumerate(offsets):
        crop = padded[b, top:top + H, left:left + W].astype(np.float64)      # (H, W, C)
        if flips[b]:
            crop = crop[:, ::-1]
        out[b] = crop.transpose(2, 0, 1) * scale[:, None, None] + bias[b][:, None, None]
    return out


# --------------------------------------------------------------------------------------
# Bilinear resize to T x T, S x S crop, optional mirror, normalise: the 224x224 transforms.
# --------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def resize_crop_flip_normalize(src, index, ylo, yhi, yw, xlo, xhi, xw, size, offsets, flips,
                               scale, bias, out):
    """out[b] = normalised (mirrored) SxS crop at ``offsets[b]`` of ``src[index[b]]`` resized to TxT.

    Inputs: src (N, H, W, C) uint8; index (B,) int64; (ylo, yhi, yw) and (xlo, xhi, xw) the
    :class:`ResizeTable` of each axis for H -> T and W -> T; size S; offsets (B, 2) int64,
    (top, left) of the crop in the resized image, each in [0, T-S]; flips (B,) bool;
    scale (C,) float32; bias (B, C) float32. Output: out (B, C, S, S) float32, in place.

    Separable: first interpolate along x for every source row, ``tmp[c, y, j]`` (C, H, S),
    then along y. Only the S columns and S rows of the crop are ever computed.
    """
    B = index.shape[0]
    H, C = src.shape[1], src.shape[3]
    S = size
    tmp = np.empty((C, H, S), np.float32)
    for b in range(B):
        n = index[b]
        top = offsets[b, 0]
        left = offsets[b, 1]
        # horizontal pass: output column j reads resized column q
        for j in range(S):
            q = left + (S - 1 - j if flips[b] else j)
            x0 = xlo[q]
            x1 = xhi[q]
            wx = xw[q]
            for y in range(H):
                for c in range(C):
                    a = np.float32(src[n, y, x0, c])
                    tmp[c, y, j] = a + wx * (np.float32(src[n, y, x1, c]) - a)
        # vertical pass, then normalise
        for c in range(C):
            s = scale[c]
            z = bias[b, c]
            for i in range(S):
                p = top + i
                y0 = ylo[p]
                y1 = yhi[p]
                wy = yw[p]
                for j in range(S):
                    a = tmp[c, y0, j]
                    out[b, c, i, j] = (a + wy * (tmp[c, y1, j] - a)) * s + z


def resize_crop_flip_normalize_reference(src, index, ytab, xtab, size, offsets, flips,
                                         scale, bias):
    """Plain NumPy version of :func:`resize_crop_flip_normalize` (returns a new array).

    Written as the four-tap bilinear formula on the whole TxT image, then cropped and
    mirrored, so it shares no loop structure with the fast kernel.
    """
    img = src[index].astype(np.float64)                              # (B, H, W, C)
    y0, y1, wy = ytab.lo, ytab.hi, ytab.w.astype(np.float64)[:, None, None]
    x0, x1, wx = xtab.lo, xtab.hi, xtab.w.astype(np.float64)[None, :, None]
    out = np.empty((len(index), src.shape[3], size, size), np.float32)
    for b, (top, left) in enumerate(offsets):
        I = img[b]
        big = ((1 - wy) * (1 - wx) * I[y0][:, x0] + (1 - wy) * wx * I[y0][:, x1]
               + wy * (1 - wx) * I[y1][:, x0] + wy * wx * I[y1][:, x1])  # (T, T, C)
        crop = big[top:top + size, left:left + size]
        if flips[b]:
            crop = crop[:, ::-1]
        out[b] = crop.transpose(2, 0, 1) * scale[:, None, None] + bias[b][:, None, None]
    return out


# --------------------------------------------------------------------------------------
# First and second moments of the RGB values: mean, std and the PCA of the colour.
# --------------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def channel_moments(pixels):
    """Exact integer sums over RGB pixels (M, 3) uint8: ``s[c] = sum v_c``, ``ss[c, d] = sum v_c v_d``.

    The nine sums live in scalar accumulators (registers) rather than arrays: much faster. int64 cannot overflow: 255^2 * M < 2^63 for M below 10^14 pixels.
    """
    r = g = b = rr = rg = rb = gg = gb = bb = np.int64(0)
    for m in range(pixels.shape[0]):
        vr = np.int64(pixels[m, 0])
        vg = np.int64(pixels[m, 1])
        vb = np.int64(pixels[m, 2])
        r += vr
        g += vg
        b += vb
        rr += vr * vr
        rg += vr * vg
        rb += vr * vb
        gg += vg * vg
        gb += vg * vb
        bb += vb * vb
    s = np.array([r, g, b])
    ss = np.array([[rr, rg, rb], [rg, gg, gb], [rb, gb, bb]])
    return s, ss


def channel_moments_reference(pixels):
    """Plain NumPy version of :func:`channel_moments`."""
    p = pixels.astype(np.int64)
    return p.sum(axis=0), p.T @ p
