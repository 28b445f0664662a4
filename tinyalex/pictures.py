"""Pictures drawn with Pillow alone: training curves, conv1 filters, a confusion matrix.

- ``plot_curves(rows, path, chance=None)``: loss and accuracy per epoch, train and
  validation; the accuracy axis always 0-100%, with a dashed line at chance.
- ``filter_grid(w, path, towers=2)``: the conv1 kernels as an image grid, one block per
  tower as in Figure 3 of the AlexNet paper, and a colourfulness score per tower.
- ``confusion_png(matrix, classes, path, subtitle=None)``: a heatmap of the confusion matrix
  with counts, the subtitle saying which images and which test-time views.

Every label goes through ``draw_text``, which writes control characters as escapes (a class
named "air\\nplane" is drawn as ``air\\nplane``). Every picture is written atomically (a
temporary file, then a rename), so a reader never sees half a PNG. The curves are
drawn at twice the size and shrunk, which smooths the lines (Pillow's line drawing has no
anti-aliasing of its own).
"""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tinyalex.errors import printable
from tinyalex.outfiles import atomic_write

# matplotlib's first two default colours, so the curves look like what readers expect.
TRAIN_COLOUR = (31, 119, 180)
VAL_COLOUR = (255, 127, 14)
INK = (40, 40, 40)
GRID = (225, 225, 225)
WHITE = (255, 255, 255)
CHANCE_COLOUR = (128, 128, 128)


def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's built-in scalable font (Pillow >= 10.1), else DejaVu Sans if installed."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        pass
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default()    # a small bitmap font: text drawn but unscaled


def _save_png(image: Image.Image, path) -> None:
    atomic_write(path, lambda f: image.save(f, format="PNG", optimize=True))


def draw_text(draw: ImageDraw.ImageDraw, xy, text: str, **options) -> None:
    """``draw.text`` of ``text`` made printable: every label of every picture goes through here,
    so that a newline in a class or file name cannot make Pillow refuse it (multiline text
    takes no ``anchor``)."""
    draw.text(xy, printable(text), **options)


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), printable(text), font=font)
    return right - left, bottom - top


# ---------------------------------------------------------------------------------------------
# Training curves


def _nice_step(span: float, max_ticks: int) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k giving at most max_ticks intervals over span."""
    raw = span / max_ticks
    power = 10.0 ** math.floor(math.log10(raw))
    for multiple in (1.0, 2.0, 2.5, 5.0, 10.0):
        if multiple * power >= raw:
            return multiple * power
    return 10.0 * power


def _axis_range(values: list[float], *, lo_limit=-math.inf, hi_limit=math.inf,
                max_ticks=5, integer=False) -> tuple[float, float, list[float]]:
    """An axis range: the values plus a 6% margin (so no point sits on the frame), and
    round-numbered ticks inside it. Ticks stay within [lo_limit, hi_limit]."""
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:                       # one value (or all equal): open a window
        pad = max(abs(lo) * 0.1, 1.0 if integer else 0.05)
        lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo, max_ticks)
    if integer:
        step = max(1.0, round(step))
    margin = 0.06 * (hi - lo)
    lo, hi = lo - margin, hi + margin
    first = math.ceil(max(lo, lo_limit) / step - 1e-9)
    last = math.floor(min(hi, hi_limit) / step + 1e-9)
    ticks = [k * step for k in range(first, last + 1)]
    return lo, hi, ticks


def _format_tick(value: float, step: float) -> str:
    decimals = max(0, -int(math.floor(math.log10(step) + 1e-9))) if step < 1 else 0
    if step < 1 and round(step * 10 ** decimals) % 1:
        decimals += 1
    return f"{value:.{decimals}f}"


def _finite(value) -> bool:
    """True for a finite number; False for None, NaN, infinities and '' (a CSV gap)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _draw_panel(draw, box, title, xs, series, *, x_range, y_range, legend_corner, s,
                levels=()):
    """One chart: frame, grid, ticks, lines with markers and a legend.

    box: (left, top, right, bottom) of the plotting area in pixels; series: list of
    (label, colour, ys) with None for missing points; levels: (label, colour, y) drawn as
    dashed horizontal lines with a legend entry; s: the supersampling factor.
    """
    left, top, right, bottom = box
    x_lo, x_hi, x_ticks = x_range
    y_lo, y_hi, y_ticks = y_range
    tick_font, title_font = _font(13 * s), _font(16 * s)

    def px(x, y):
        return (left + (x - x_lo) / (x_hi - x_lo) * (right - left),
                bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top))

    # Grid and tick labels.
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
    for y in y_ticks:
        _, py = px(x_lo, y)
        draw.line([(left, py), (right, py)], fill=GRID, width=s)
        draw_text(draw, (left - 8 * s, py), _format_tick(y, y_step), font=tick_font, fill=INK,
                  anchor="rm")
    for x in x_ticks:
        qx, _ = px(x, y_lo)
        draw.line([(qx, top), (qx, bottom)], fill=GRID, width=s)
        draw.line([(qx, bottom), (qx, bottom + 5 * s)], fill=INK, width=s)
        draw_text(draw, (qx, bottom + 8 * s), f"{x:g}", font=tick_font, fill=INK, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline=INK, width=s)
    draw_text(draw, ((left + right) / 2, top - 12 * s), title, font=title_font, fill=INK,
              anchor="md")
    draw_text(draw, ((left + right) / 2, bottom + 30 * s), "epoch", font=tick_font, fill=INK,
              anchor="mt")

    # Reference levels (chance), dashed and under the curves.
    dash = 10 * s
    for _, colour, y in levels:
        _, py = px(x_lo, y)
        for x0 in range(int(left), int(right), 2 * dash):
            draw.line([(x0, py), (min(x0 + dash, right), py)], fill=colour, width=2 * s)

    # Lines, broken where a value is missing, and a dot on every point (so that a single
    # epoch still shows).
    for _, colour, ys in series:
        run = []
        for x, y in zip(xs, ys):
            if y is None:
                if len(run) > 1:
                    draw.line(run, fill=colour, width=3 * s, joint="curve")
                run = []
                continue
            run.append(px(x, y))
        if len(run) > 1:
            draw.line(run, fill=colour, width=3 * s, joint="curve")
        r = 4 * s
        for x, y in zip(xs, ys):
            if y is not None:
                cx, cy = px(x, y)
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour, outline=WHITE,
                             width=s)

    # Legend in the right-hand corner legend_corner names (see _legend_corner).
    entries = [(label, colour, False) for label, colour, ys in series
               if any(y is not None for y in ys)]
    entries += [(label, colour, True) for label, colour, _ in levels]
    if not entries:
        return
    pad, swatch, line_h = 8 * s, 22 * s, 20 * s
    width = max(_text_size(draw, label, tick_font)[0] for label, _, _ in entries)
    width += swatch + 3 * pad
    height = line_h * len(entries) + pad
    lx = right - width - 10 * s
    ly = top + 10 * s if legend_corner == "top" else bottom - height - 10 * s
    draw.rectangle([lx, ly, lx + width, ly + height], fill=WHITE, outline=(190, 190, 190),
                   width=s)
    for k, (label, colour, dashed) in enumerate(entries):
        cy = ly + pad / 2 + line_h * k + line_h / 2
        if dashed:
            for x0 in (lx + pad, lx + pad + swatch * 0.6):
                draw.line([(x0, cy), (x0 + swatch * 0.4, cy)], fill=colour, width=2 * s)
        else:
            draw.line([(lx + pad, cy), (lx + pad + swatch, cy)], fill=colour, width=3 * s)
        draw_text(draw, (lx + 2 * pad + swatch, cy), label, font=tick_font, fill=INK, anchor="lm")


def accuracy_range() -> tuple[float, float, list[float]]:
    """The accuracy axis: always 0-100% (ticks every 20%), so that a run at chance looks flat
    and low rather than zoomed into a range of a few tenths of a percent."""
    return _axis_range([0.0, 100.0], lo_limit=0.0, hi_limit=100.0)


def _legend_corner(xs, series, x_range, y_range, default):
    """"top" or "bottom": the corner of the right half that fewer points fall in, so that
    the legend hides as little as possible (default on a tie)."""
    x_mid, y_mid = (x_range[0] + x_range[1]) / 2, (y_range[0] + y_range[1]) / 2
    right = [y for _, _, ys in series for x, y in zip(xs, ys) if y is not None and x >= x_mid]
    above = sum(y > y_mid for y in right)
    below = len(right) - above
    return default if above == below else "top" if above < below else "bottom"


def plot_curves(rows: list[dict], path, *, chance: float | None = None) -> None:
    """Draw loss and accuracy per epoch, train and validation, side by side, to a PNG.

    Inputs:
    - rows: one dict per epoch with keys ``epoch``, ``train_loss``, ``train_acc``,
      ``val_loss``, ``val_acc``. Accuracies are fractions in [0, 1] (drawn in %, on an axis
      from 0 to 100%). The validation values may be missing, None or NaN (no validation
      split); such points are left out, and a non-finite training loss (a diverged run) is
      left out too.
    - path: the PNG to write (atomically).
    - chance: the accuracy of guessing, a fraction (1 / number of classes), drawn as a dashed
      line on the accuracy panel; None draws none.
    """
    if not rows:
        raise ValueError("plot_curves needs at least one row")
    xs = [float(row["epoch"]) for row in rows]

    def column(key, scale=1.0):
        return [float(row[key]) * scale if _finite(row.get(key)) else None for row in rows]

    for key in ("train_acc", "val_acc"):
        bad = [v for v in column(key) if v is not None and not -1e-9 <= v <= 1 + 1e-9]
        if bad:
            raise ValueError(f"plot_curves: {key} must be a fraction in [0, 1], got {bad[0]}")
    losses = [("train", TRAIN_COLOUR, column("train_loss")),
              ("validation", VAL_COLOUR, column("val_loss"))]
    accs = [("train", TRAIN_COLOUR, column("train_acc", 100.0)),
            ("validation", VAL_COLOUR, column("val_acc", 100.0))]

    def with_last(series, fmt):
        out = []
        for label, colour, ys in series:
            known = [y for y in ys if y is not None]
            if known:
                label = f"{label}  {fmt.format(known[-1])}"
                if colour == VAL_COLOUR and fmt.endswith("%") and max(known) > known[-1]:
                    label += f"  (best {max(known):.1f}%)"
            out.append((label, colour, ys))
        return out

    losses = with_last(losses, "{:.3f}")
    accs = with_last(accs, "{:.1f}%")

    s = 2                                     # draw at twice the size, then shrink
    width, height = 1100, 430
    image = Image.new("RGB", (width * s, height * s), WHITE)
    draw = ImageDraw.Draw(image)
    x_values = xs if len(set(xs)) > 1 else [xs[0] - 1, xs[0] + 1]
    x_range = _axis_range(x_values, integer=True, max_ticks=10)
    panel_w = (width - 3 * 70) // 2
    loss_values = [y for _, _, ys in losses for y in ys if y is not None] or [0.0, 1.0]
    levels = [] if chance is None else [(f"chance {100 * chance:.3g}%", CHANCE_COLOUR,
                                         100 * chance)]
    for k, (title, series, corner, y_range, lines) in enumerate([
            ("Loss (cross-entropy)", losses, "top",
             _axis_range(loss_values, lo_limit=0.0), []),
            ("Accuracy (%)", accs, "bottom", accuracy_range(), levels)]):
        left = 70 + k * (panel_w + 80)
        box = (left * s, 45 * s, (left + panel_w) * s, (height - 60) * s)
        corner = _legend_corner(xs, series, x_range, y_range, corner)
        _draw_panel(draw, box, title, xs, series, x_range=x_range, y_range=y_range,
                    legend_corner=corner, s=s, levels=lines)
    image = image.resize((width, height), Image.LANCZOS)
    _save_png(image, path)


# ---------------------------------------------------------------------------------------------
# conv1 filters


def colourfulness(kernels: np.ndarray) -> np.ndarray:
    """Per kernel: how much its colour channels differ, relative to its overall contrast.

    For a kernel k of shape (3, KH, KW):

        colourfulness(k) = mean over pixels (y, x) of std over channels c of k[c, y, x]
                           / std over all (c, y, x) of k

    0 for a grey kernel (the three channels equal at every pixel), up to 1 for a kernel
    whose every pixel has the same mean and only the colour varies (the total variance is
    the mean within-pixel colour variance plus the variance of the pixel means, so the
    ratio cannot exceed 1). Independent random channels give about 0.7. It does not change
    when the kernel is scaled or shifted, so it is the same for the raw weights and the
    picture. A constant kernel scores 0.

    Input (F, 3, KH, KW); returns (F,) float64.
    """
    k = kernels.astype(np.float64)
    across_colour = k.std(axis=1).mean(axis=(1, 2))              # (F,)
    overall = k.reshape(len(k), -1).std(axis=1)                  # (F,)
    return np.where(overall > 0, across_colour / np.where(overall > 0, overall, 1), 0.0)


def filter_grid(w: np.ndarray, path, *, towers: int = 2, scale: int | None = None
                ) -> list[float]:
    """Draw conv1's kernels as an image grid, one labelled block per tower, to a PNG.

    As in Figure 3 of the AlexNet paper, tower 0 (kernels 0 .. F/towers - 1, the paper's
    GPU 1) is the top block and tower 1 the bottom one, 16 kernels to a row. Each kernel is
    stretched to the full 0-255 range on its own (min to black, max to white, the same
    stretch for all three channels so its colours are kept), and enlarged ``scale`` times
    with nearest-neighbour (default: about 48 pixels a side, 16x for 3x3, 4x for 11x11).

    Inputs:
    - w: (F, 3, KH, KW) conv1 weights; F divisible by towers.
    - path: the PNG to write (atomically).
    Returns the mean colourfulness (see ``colourfulness``) of each tower's kernels:
    near 0 for a colour-agnostic tower, larger for a colour-specific one.
    """
    w = np.asarray(w)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f"filter_grid expects (F, 3, KH, KW) RGB kernels, got {w.shape}")
    if towers < 1 or w.shape[0] % towers:
        raise ValueError(f"{w.shape[0]} kernels cannot be split into {towers} towers")
    if not np.all(np.isfinite(w)):
        raise ValueError("filter_grid: the kernels contain NaN or infinite values")
    n_kernels, _, kh, kw = w.shape
    per_tower = n_kernels // towers
    scale = scale or max(1, round(48 / max(kh, kw)))
    scores = colourfulness(w)
    tower_scores = [float(scores[t * per_tower:(t + 1) * per_tower].mean())
                    for t in range(towers)]

    # Normalise each kernel to [0, 255] and lay it out as (KH, KW, 3) RGB.
    k = w.astype(np.float64)
    lo = k.min(axis=(1, 2, 3), keepdims=True)
    span = k.max(axis=(1, 2, 3), keepdims=True) - lo
    k = np.where(span > 0, (k - lo) / np.where(span > 0, span, 1), 0.5)
    tiles = (k.transpose(0, 2, 3, 1) * 255 + 0.5).astype(np.uint8)   # (F, KH, KW, 3)

    cols = min(per_tower, 16)
    rows = math.ceil(per_tower / cols)
    gap, margin = 3, 20
    cell_h, cell_w = kh * scale, kw * scale
    block_w = cols * cell_w + (cols + 1) * gap
    block_h = rows * cell_h + (rows + 1) * gap
    title_font, label_font = _font(18), _font(14)
    title_h, label_h = 36, 26
    width = max(block_w + 2 * margin, 520)
    height = margin + title_h + towers * (label_h + block_h + 14) + margin - 14
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    draw_text(draw, (width / 2, margin), f"conv1 kernels: {n_kernels} x 3 x {kh} x {kw}",
              font=title_font, fill=INK, anchor="mt")
    x0 = (width - block_w) // 2
    y = margin + title_h
    for t in range(towers):
        first, last = t * per_tower, (t + 1) * per_tower - 1
        draw_text(draw, (x0, y + label_h - 6), f"tower {t}: kernels {first}-{last}",
                  font=label_font, fill=INK, anchor="ls")
        draw_text(draw, (x0 + block_w, y + label_h - 6), f"colourfulness {tower_scores[t]:.2f}",
                  font=label_font, fill=INK, anchor="rs")
        y += label_h
        draw.rectangle([x0, y, x0 + block_w - 1, y + block_h - 1], fill=(30, 30, 30))
        for j in range(per_tower):
            tile = Image.fromarray(tiles[first + j]).resize((cell_w, cell_h), Image.NEAREST)
            r, c = divmod(j, cols)
            image.paste(tile, (x0 + gap + c * (cell_w + gap), y + gap + r * (cell_h + gap)))
        y += block_h + 14
    _save_png(image, path)
    return tower_scores


# ---------------------------------------------------------------------------------------------
# Confusion matrix

# A white-to-dark-blue ramp (matplotlib's "Blues" at 0, 1/4, 1/2, 3/4, 1).
_BLUES = np.array([(247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181),
                   (8, 48, 107)], dtype=np.float64)


def _blue(fraction: float) -> tuple[int, int, int]:
    position = min(max(fraction, 0.0), 1.0) * (len(_BLUES) - 1)
    k = min(int(position), len(_BLUES) - 2)
    colour = _BLUES[k] + (_BLUES[k + 1] - _BLUES[k]) * (position - k)
    return tuple(int(round(c)) for c in colour)


def confusion_png(matrix: np.ndarray, classes: list[str], path, *,
                  subtitle: str | None = None) -> None:
    """Draw a confusion matrix as a heatmap with class names and counts, to a PNG.

    Inputs:
    - matrix: (K, K) counts, ``matrix[i, j]`` = images of true class i predicted as j.
      Cells are shaded by the fraction of their row (so the diagonal shows each class's
      accuracy) and print the count; each row's accuracy is written on the right.
    - classes: the K class names.
    - path: the PNG to write (atomically).
    - subtitle: a line under the title, such as which images were scored and with which
      test-time augmentation (``evaluate`` writes both).
    """
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {m.shape}")
    if len(classes) != m.shape[0]:
        raise ValueError(f"{len(classes)} class names for a {m.shape[0]}-class matrix")
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("confusion matrix counts must be finite and >= 0")
    n = m.shape[0]
    row_totals = m.sum(axis=1)
    fractions = m / np.where(row_totals > 0, row_totals, 1)[:, None]
    total = m.sum()
    accuracy = np.trace(m) / total if total > 0 else float("nan")

    cell = int(min(60, max(14, 640 // n)))
    count_font, title_font = _font(max(8, min(15, cell // 3))), _font(17)
    label_font = _font(min(14, cell - 3))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(_text_size(probe, str(c), label_font)[0] for c in classes)
    left = 40 + label_w + 10                      # room for "true class" and row names
    subtitle_font = _font(13)
    top = 60 + (20 if subtitle else 0)
    grid = n * cell
    right_col = 70                                # per-row accuracy
    acc_text = f", accuracy {100 * accuracy:.1f}%" if total > 0 else ""
    integral = bool(np.all(m == np.round(m)))
    count = str(int(total)) if integral else f"{total:g}"
    title = f"Confusion matrix: {count} images{acc_text}"
    title_w = max(_text_size(probe, title, title_font)[0],
                  _text_size(probe, subtitle, subtitle_font)[0] if subtitle else 0)
    width = max(left + grid + right_col + 20, title_w + 40)
    height = top + grid + 10 + label_w + 40
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    # centred over the grid if it fits there, else kept inside the picture
    title_x = min(max(left + grid / 2, title_w / 2 + 20), width - title_w / 2 - 20)
    draw_text(draw, (title_x, 20), title, font=title_font, fill=INK, anchor="mt")
    if subtitle:
        draw_text(draw, (title_x, 42), subtitle, font=subtitle_font, fill=INK, anchor="mt")
    draw_text(draw, (left + grid + right_col / 2, top - 6), "correct", font=label_font, fill=INK,
              anchor="ms")
    for i in range(n):
        for j in range(n):
            x, y = left + j * cell, top + i * cell
            shade = _blue(fractions[i, j])
            # a one-pixel white seam between cells when they are large enough
            seam = 1 if cell >= 24 else 0
            draw.rectangle([x, y, x + cell - 1 - seam, y + cell - 1 - seam], fill=shade)
            if cell >= 24:
                text = f"{int(m[i, j])}" if integral else f"{m[i, j]:.3g}"
                ink = WHITE if fractions[i, j] > 0.45 else INK if m[i, j] else (175, 175, 175)
                draw_text(draw, (x + cell / 2, y + cell / 2), text, font=count_font, fill=ink,
                          anchor="mm")
        # row name and row accuracy
        cy = top + i * cell + cell / 2
        draw_text(draw, (left - 8, cy), str(classes[i]), font=label_font, fill=INK, anchor="rm")
        if row_totals[i] > 0:
            draw_text(draw, (left + grid + right_col / 2, cy), f"{100 * fractions[i, i]:.1f}%",
                      font=label_font, fill=INK, anchor="mm")
    # Column names below the grid, written upwards and ending at the grid.
    for j in range(n):
        name = str(classes[j])
        tw, th = _text_size(probe, name, label_font)
        label = Image.new("RGB", (tw + 4, th + 8), WHITE)
        draw_text(ImageDraw.Draw(label), (2, 2), name, font=label_font, fill=INK, anchor="lt")
        label = label.rotate(90, expand=True)
        image.paste(label, (int(left + j * cell + cell / 2 - label.width / 2), top + grid + 6))
    draw_text(draw, (left + grid / 2, height - 12), "predicted class", font=label_font, fill=INK,
              anchor="ms")
    axis = Image.new("RGB", (_text_size(probe, "true class", label_font)[0] + 4, 22), WHITE)
    draw_text(ImageDraw.Draw(axis), (2, 2), "true class", font=label_font, fill=INK, anchor="lt")
    axis = axis.rotate(90, expand=True)
    image.paste(axis, (8, int(top + grid / 2 - axis.height / 2)))
    _save_png(image, path)


# ---------------------------------------------------------------------------------------------
# The `filters` command: python -m tinyalex filters CKPT --out conv1.png

TOWERS = 2          # conv1's kernels split as the paper's two GPUs
# towers whose mean colourfulness differs by less than this count as alike. For scale: grey
# kernels score 0, kernels with independent random channels about 0.7.
COLOUR_GAP = 0.1


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


def run_filters(args):
    from tinyalex.checkpoint import load_model
    from tinyalex.outfiles import check_new_file, writing
    model, _ = load_model(args.checkpoint, route=getattr(args, "route", "fast"))
    check_new_file(args.out, inputs=[args.checkpoint])
    w = model.params["conv1.w"]                                       # (F, 3, KH, KW)
    with writing(args.out):
        scores = filter_grid(w, args.out, towers=TOWERS)
    per_tower = len(w) // TOWERS
    print(f"wrote {args.out}: {len(w)} conv1 kernels of 3x{w.shape[2]}x{w.shape[3]}, "
          f"{TOWERS} towers of {per_tower}")
    for t, score in enumerate(scores):
        print(f"tower {t} (kernels {t * per_tower}-{(t + 1) * per_tower - 1}): "
              f"colourfulness {score:.3f}")
    print(filters_verdict(scores))
    return 0


def register(subparsers):
    """Add the `filters` command to an argparse subparsers object."""
    from tinyalex.argtypes import add_checkpoint_argument, non_empty_path
    p = subparsers.add_parser(
        "filters", help="draw the conv1 kernels, tower by tower, and score their colour",
        description="Draw the conv1 kernels as an image grid, tower 0 (the first half) above "
                    "tower 1, as in Figure 3 of the AlexNet paper, and print each tower's "
                    "mean colourfulness: 0 for grey kernels, about 0.7 for random ones. The "
                    "paper saw one tower's kernels colour-agnostic and the other's "
                    "colour-specific.")
    add_checkpoint_argument(p)
    p.add_argument("--out", metavar="PNG", type=non_empty_path, required=True, help="the picture to write")
    p.set_defaults(func=run_filters)
