"""Pixel kernels, augmentation, test-time views, the BatchLoader and load_images."""
import threading

import numpy as np
import pytest
from PIL import Image

from tinyalex.data import BatchLoader, eval_views, load_images
from tinyalex.data import pixels as K
from tinyalex.data.transforms import Placement, render
from tinyalex.errors import DataError

MEAN = np.array([0.49, 0.48, 0.45], np.float32)
STD = np.array([0.25, 0.24, 0.26], np.float32)


def _images(n, side=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def _normalise(nhwc):
    """Plain normalisation of uint8 NHWC -> float NCHW."""
    return ((nhwc / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2)


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "tinyalex-prefetch" and t.is_alive()]


# --- kernels == references --------------------------------------------------------------

@pytest.mark.parametrize("side, pad", [(32, 4), (7, 1), (5, 0), (9, 3)])
def test_crop_kernel_equals_reference(side, pad):
    rng = np.random.default_rng(side)
    src = _images(6, side)
    index = np.array([5, 0, 3, 3, 1, 2, 4], np.int64)
    offsets = rng.integers(0, 2 * pad + 1, (7, 2))
    offsets[:2] = [[0, 2 * pad], [2 * pad, 0]]                  # the extremes
    flips = np.array([True, False, True, False, True, True, False])
    scale = rng.uniform(0.01, 0.02, 3).astype(np.float32)
    bias = rng.normal(size=(7, 3)).astype(np.float32)
    out = np.empty((7, 3, side, side), np.float32)
    K.crop_flip_normalize(src, index, pad, offsets, flips, scale, bias, out)
    ref = K.crop_flip_normalize_reference(src, index, pad, offsets, flips, scale, bias)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("h, w, t, s", [(32, 32, 224, 224), (32, 32, 256, 224), (5, 7, 13, 9),
                                        (6, 6, 3, 3), (4, 4, 4, 4)])
def test_resize_kernel_equals_reference(h, w, t, s):
    rng = np.random.default_rng(t)
    src = np.random.default_rng(h).integers(0, 256, (4, h, w, 3), dtype=np.uint8)
    index = np.array([3, 1, 1, 0, 2], np.int64)
    offsets = rng.integers(0, t - s + 1, (5, 2))
    offsets[:2] = [[0, t - s], [t - s, 0]]
    flips = np.array([True, False, True, False, True])
    scale = np.full(3, 1 / 60, np.float32)
    bias = rng.normal(size=(5, 3)).astype(np.float32)
    ytab, xtab = K.resize_table(h, t), K.resize_table(w, t)
    out = np.empty((5, 3, s, s), np.float32)
    K.resize_crop_flip_normalize(src, index, *ytab, *xtab, s, offsets, flips, scale, bias, out)
    ref = K.resize_crop_flip_normalize_reference(src, index, ytab, xtab, s, offsets, flips,
                                                 scale, bias)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_bilinear_upscale_matches_pytorch():
    torch = pytest.importorskip("torch")
    src = _images(3)
    ones = np.ones(3, np.float32)
    for size in (224, 256, 50):
        out = render(src, np.arange(3), Placement(size, 0, np.zeros((3, 2), np.int64),
                                                   np.zeros(3, bool), np.zeros((3, 3), np.float32)),
                     size=size, mean=np.zeros(3), std=ones / 255)            # raw 0..255 values
        x = torch.from_numpy(src.transpose(0, 3, 1, 2).astype(np.float64))
        ref = torch.nn.functional.interpolate(x, size=size, mode="bilinear",
                                              align_corners=False).numpy()
        np.testing.assert_allclose(out, ref, atol=2e-4)


def test_resize_by_half_averages_2x2_blocks():
    src = _images(2, 8)
    half = render(src, np.arange(2), Placement(4, 0, np.zeros((2, 2), np.int64), np.zeros(2, bool),
                                               np.zeros((2, 3), np.float32)),
                  size=4, mean=np.zeros(3), std=np.full(3, 1 / 255))
    blocks = src.reshape(2, 4, 2, 4, 2, 3).mean(axis=(2, 4)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(half, blocks, atol=1e-4)


def test_channel_moments_equal_reference():
    pixels = _images(7, 5).reshape(-1, 3)
    s, ss = K.channel_moments(pixels)
    s_ref, ss_ref = K.channel_moments_reference(pixels)
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_array_equal(ss, ss_ref)


# --- training augmentation --------------------------------------------------------------

def _loader(images, **kw):
    kw.setdefault("batch_size", 16)
    kw.setdefault("mean", MEAN)
    kw.setdefault("std", STD)
    return BatchLoader(images, np.arange(len(images)) % 10, **kw)


def test_no_augmentation_is_plain_normalisation():
    images = _images(20)
    for train in (True, False):
        loader = _loader(images, train=train, augment="none")
        x, y = next(iter(loader.epoch(0)))
        order = loader.order(0)[:16]
        assert x.dtype == np.float32 and x.flags.c_contiguous and y.dtype == np.int64
        np.testing.assert_allclose(x, _normalise(images[order]), atol=1e-5)
        np.testing.assert_array_equal(y, order % 10)


def test_basic_32_is_an_in_bounds_crop_of_the_padded_image_maybe_mirrored():
    images = _images(64, seed=1)
    loader = _loader(images, batch_size=64, augment="basic", seed=5)
    x, _ = next(iter(loader.epoch(0)))
    order = loader.order(0)
    black = np.pad(images[order], ((0, 0), (4, 4), (4, 4), (0, 0)))       # (64, 40, 40, 3)
    padded = _normalise(black)
    found = []
    for b in range(64):
        hits = [(top, left, flip) for top in range(9) for left in range(9) for flip in (0, 1)
                if np.allclose(x[b], (lambda c: c[..., ::-1] if flip else c)(
                    padded[b, :, top:top + 32, left:left + 32]), atol=1e-5)]
        assert hits, f"batch image {b} is not a crop of its padded source"
        found.append(hits[0])
    tops, lefts, flips = np.array(found).T
    assert 0 < flips.mean() < 1                              # both mirrored and not
    assert tops.min() < 2 and tops.max() > 6 and lefts.min() < 2 and lefts.max() > 6


def test_flip_32_is_the_image_or_its_exact_mirror_and_224_flip_is_basic():
    """--augment flip: mirrors only, no crop; at 224 basic is already mirrors of the upscaled
    image, so the two give the very same batches."""
    images = _images(64, seed=3)
    loader = _loader(images, batch_size=64, augment="flip", seed=5)
    x, _ = next(iter(loader.epoch(0)))
    plain = _normalise(images[loader.order(0)])
    mirrored = np.array([np.allclose(x[b], plain[b][..., ::-1], atol=1e-5) for b in range(64)])
    as_is = np.array([np.allclose(x[b], plain[b], atol=1e-5) for b in range(64)])
    assert (mirrored | as_is).all() and 0 < mirrored.mean() < 1
    kw = dict(batch_size=12, image_size=224, seed=1)
    np.testing.assert_array_equal(next(iter(_loader(images[:12], augment="flip", **kw).epoch(0)))[0],
                                  next(iter(_loader(images[:12], augment="basic", **kw).epoch(0)))[0])


@pytest.mark.parametrize("size, cutout", [(32, 8), (32, 1), (224, 56)])
def test_cutout_blanks_one_square_per_image_and_changes_nothing_else(size, cutout):
    """Each training image is the batch without cutout except for one clipped KxK square set
    to 0 (the mean colour), all channels; the placements are those of a run without cutout;
    validation images have none."""
    images = _images(64, seed=2)
    kw = dict(batch_size=64, augment="basic", seed=4, image_size=size, prefetch=0)
    plain, _ = next(iter(_loader(images, **kw).epoch(1)))
    x, _ = next(iter(_loader(images, cutout=cutout, **kw).epoch(1)))
    zero = x == 0
    assert (zero == zero[:, :1]).all()                                       # every channel
    np.testing.assert_array_equal(np.where(zero, plain, x), plain)           # the rest untouched
    areas, heights = [], []
    for b in range(64):
        rows, cols = np.nonzero(zero[b, 0] & (plain[b, 0] != 0))
        if cutout > 1:
            assert len(rows), f"image {b} has no square"
        square = zero[b, 0, rows.min():rows.max() + 1, cols.min():cols.max() + 1] if len(rows) else None
        if square is not None:
            assert square.all() and square.shape[0] <= cutout and square.shape[1] <= cutout
            areas.append(square.size)
            heights.append(square.shape[0])
    assert max(heights) == cutout                                            # whole squares
    assert cutout == 1 or min(areas) < cutout * cutout                       # and squares clipped at the edges
    validation, _ = next(iter(_loader(images, cutout=cutout, train=False, **{**kw, "augment": "none"}).epoch(0)))
    np.testing.assert_array_equal(validation, next(iter(_loader(images, train=False, **kw).epoch(0)))[0])


def test_cutout_batches_are_a_function_of_seed_epoch_and_batch():
    images = _images(20, seed=7)
    kw = dict(batch_size=4, augment="basic", seed=3, cutout=6)
    single = _all(_loader(images, prefetch=0, **kw), 2)
    assert _same(_all(_loader(images, prefetch=2, **kw), 2, start=3), single[3:])
    assert not _same(_all(_loader(images, prefetch=0, **{**kw, "seed": 4}), 2), single)


def test_224_basic_is_the_upscaled_image_or_its_exact_mirror():
    images = _images(12, seed=2)
    loader = _loader(images, batch_size=12, augment="basic", image_size=224, seed=1)
    x, _ = next(iter(loader.epoch(3)))
    plain, mirrored = eval_views(images[loader.order(3)], "flip", 224, MEAN, STD)
    np.testing.assert_array_equal(plain[..., ::-1], mirrored)          # a flip is exact
    is_plain = (x == plain).all(axis=(1, 2, 3))
    is_mirror = (x == mirrored).all(axis=(1, 2, 3))
    assert (is_plain | is_mirror).all() and is_plain.any() and is_mirror.any()


def test_224_paper_is_an_in_bounds_crop_of_the_256_image():
    images = _images(6, seed=3)
    no_light = (np.zeros(3, np.float32), np.eye(3, dtype=np.float32))
    loader = _loader(images, batch_size=6, augment="paper", image_size=224, pca=no_light, seed=2)
    x, _ = next(iter(loader.epoch(0)))
    order = loader.order(0)
    big = render(images, order, Placement(256, 0, np.zeros((6, 2), np.int64), np.zeros(6, bool),
                                          np.zeros((6, 3), np.float32)),
                 size=256, mean=MEAN, std=STD)
    corners = set()
    for b in range(6):
        for flip in (0, 1):
            view = x[b][..., ::-1] if flip else x[b]
            # locate by the first row, then check the whole window
            hits = [(t, l) for t in range(33) for l in range(33)
                    if (big[b, :, t, l:l + 224] == view[:, 0]).all()
                    and (big[b, :, t:t + 224, l:l + 224] == view).all()]
            if hits:
                corners.add(hits[0])
                break
        else:
            raise AssertionError(f"image {b} is not a 224 crop of its 256 upscale")
    assert len(corners) > 1


def test_pca_lighting_has_the_stated_statistics():
    # constant-colour images: whatever the crop, every pixel shows the colour + the shift
    n = 3000
    colours = np.random.default_rng(0).integers(40, 200, (n, 3))
    images = np.broadcast_to(colours[:, None, None, :], (n, 32, 32, 3)).astype(np.uint8)
    eigval = np.array([0.05, 0.01, 0.002], np.float32)
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    eigvec = q.astype(np.float32)
    loader = BatchLoader(images, np.zeros(n), batch_size=500, augment="paper", mean=MEAN,
                         std=STD, pca=(eigval, eigvec), seed=4, prefetch=0)

    def shifts(epoch):
        out = []
        for b, (x, _) in enumerate(loader.epoch(epoch)):
            idx = loader.order(epoch)[b * 500:(b + 1) * 500]
            centre = x[:, :, 12:20, 12:20] * STD[None, :, None, None] + MEAN[None, :, None, None]
            delta = centre - (colours[idx] / 255.0)[:, :, None, None]
            assert np.ptp(delta, axis=(2, 3)).max() < 1e-5     # one shift per image
            out.append((idx, delta[:, :, 0, 0]))
        idx = np.concatenate([i for i, _ in out])
        delta = np.concatenate([d for _, d in out])
        return delta[np.argsort(idx)]

    delta = shifts(0)
    alpha = (delta @ eigvec) / eigval                  # delta = sum_i alpha_i lambda_i p_i
    assert np.abs(alpha.mean(axis=0)).max() < 4 * 0.1 / np.sqrt(n)
    np.testing.assert_allclose(alpha.std(axis=0), 0.1, rtol=0.08)
    assert np.abs(np.corrcoef(alpha.T) - np.eye(3)).max() < 0.1       # independent alphas
    assert not np.allclose(shifts(1), delta)            # redrawn every time an image is used


def test_basic_and_none_add_no_lighting():
    images = np.full((8, 32, 32, 3), 100, np.uint8)
    for augment in ("basic", "none"):
        x, _ = next(iter(_loader(images, batch_size=8, augment=augment,
                                 pca=(np.ones(3), np.eye(3))).epoch(0)))
        centre = x[:, :, 8:24, 8:24]
        np.testing.assert_allclose(centre, np.broadcast_to(
            ((100 / 255 - MEAN) / STD)[None, :, None, None], centre.shape), atol=1e-5)


# --- test-time views --------------------------------------------------------------------

def test_10crop_224_views_are_the_papers_windows():
    images = _images(3, seed=4)
    views = eval_views(images, "10crop", 224, MEAN, STD)
    assert len(views) == 10 and all(v.shape == (3, 3, 224, 224) for v in views)
    big = render(images, np.arange(3), Placement(256, 0, np.zeros((3, 2), np.int64),
                                                  np.zeros(3, bool), np.zeros((3, 3), np.float32)),
                 size=256, mean=MEAN, std=STD)
    for k, (top, left) in enumerate([(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]):
        window = big[:, :, top:top + 224, left:left + 224]
        np.testing.assert_array_equal(views[k], window)
        np.testing.assert_array_equal(views[5 + k], window[..., ::-1])


def test_10crop_32_views_are_padded_corner_and_centre_windows():
    images = _images(3, seed=5)
    views = eval_views(images, "10crop", 32, MEAN, STD)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))         # black border
    for k, (top, left) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8), (4, 4)]):
        window = _normalise(padded[:, top:top + 32, left:left + 32])
        np.testing.assert_allclose(views[k], window, atol=1e-5)
        np.testing.assert_allclose(views[5 + k], window[..., ::-1], atol=1e-5)
    np.testing.assert_array_equal(views[4], eval_views(images, "none", 32, MEAN, STD)[0])


def test_none_and_flip_views():
    images = _images(4, seed=6)
    (one,) = eval_views(images, "none", 32, MEAN, STD)
    np.testing.assert_allclose(one, _normalise(images), atol=1e-5)
    plain, mirror = eval_views(images, "flip", 32, MEAN, STD)
    np.testing.assert_array_equal(plain, one)
    np.testing.assert_array_equal(mirror, one[..., ::-1])
    with pytest.raises(ValueError, match="view mode"):
        eval_views(images, "5crop", 32, MEAN, STD)


# --- the loader: shuffling, reproducibility, prefetch -----------------------------------

def _all(loader, epoch, start=0):
    return [(x.copy(), y.copy()) for x, y in loader.epoch(epoch, start)]


def _same(a, b):
    return len(a) == len(b) and all((x1 == x2).all() and (y1 == y2).all()
                                    for (x1, y1), (x2, y2) in zip(a, b))


def test_length_and_last_batch():
    images = _images(50)
    assert len(_loader(images, batch_size=16)) == 4
    assert len(_loader(images, batch_size=16, drop_last=True)) == 3
    sizes = [len(y) for _, y in _loader(images, batch_size=16).epoch(0)]
    assert sizes == [16, 16, 16, 2]
    assert [len(y) for _, y in _loader(images, batch_size=16, drop_last=True).epoch(0)] == [16] * 3


def test_every_image_once_per_epoch_in_a_new_order():
    images = _images(40)
    loader = BatchLoader(images, np.arange(40), batch_size=16, mean=MEAN, std=STD, seed=1)
    seen = [np.concatenate([y for _, y in loader.epoch(e)]) for e in range(3)]
    for s in seen:
        np.testing.assert_array_equal(np.sort(s), np.arange(40))
    assert not np.array_equal(seen[0], seen[1]) and not np.array_equal(seen[1], seen[2])
    other = BatchLoader(images, np.arange(40), batch_size=16, mean=MEAN, std=STD, seed=2)
    assert not np.array_equal(np.concatenate([y for _, y in other.epoch(0)]), seen[0])
    evaluation = BatchLoader(images, np.arange(40), batch_size=16, mean=MEAN, std=STD, train=False)
    np.testing.assert_array_equal(np.concatenate([y for _, y in evaluation.epoch(5)]),
                                  np.arange(40))


@pytest.mark.parametrize("augment, size", [("basic", 32), ("paper", 32), ("basic", 224),
                                           ("paper", 224)])
def test_resume_and_prefetch_reproduce_the_uninterrupted_run(augment, size):
    images = _images(20, seed=7)
    kw = dict(batch_size=4, augment=augment, image_size=size, seed=3,
              pca=(np.array([0.05, 0.01, 0.001]), np.eye(3)))
    single = _all(_loader(images, prefetch=0, **kw), 2)
    threaded = _all(_loader(images, prefetch=2, **kw), 2)
    assert len(single) == 5 and _same(single, threaded)
    resumed = _all(_loader(images, prefetch=2, **kw), 2, start=3)     # a fresh process
    assert _same(resumed, single[3:])
    assert not _same(_all(_loader(images, prefetch=0, **kw), 3), single)


def test_same_seed_same_batches_in_a_new_loader():
    images = _images(10)
    a = _all(_loader(images, batch_size=4, seed=9), 0)
    b = _all(_loader(images.copy(), batch_size=4, seed=9), 0)
    assert _same(a, b)


@pytest.mark.parametrize("stop", [None, RuntimeError, KeyboardInterrupt])
def test_prefetch_thread_stops_when_the_consumer_stops_early(stop):
    images = _images(64)
    loader = _loader(images, batch_size=2, prefetch=2)
    assert _prefetch_threads() == []
    try:
        for i, _ in enumerate(loader.epoch(0)):
            assert len(_prefetch_threads()) == 1
            if i == 1:
                if stop is None:
                    break
                raise stop("consumer gave up")
    except (RuntimeError, KeyboardInterrupt) as e:
        assert str(e) == "consumer gave up"
    assert _prefetch_threads() == []


def test_generator_closed_by_hand_stops_the_thread():
    loader = _loader(_images(64), batch_size=2)
    batches = loader.epoch(0)
    next(batches)
    assert len(_prefetch_threads()) == 1
    batches.close()
    assert _prefetch_threads() == []


def test_error_in_the_prefetch_thread_reaches_the_consumer(monkeypatch):
    loader = _loader(_images(20), batch_size=4)
    real = loader.batch

    def failing(order, epoch, b):
        if b == 2:
            raise ValueError("broken batch 2")
        return real(order, epoch, b)
    monkeypatch.setattr(loader, "batch", failing)
    got = 0
    with pytest.raises(ValueError, match="broken batch 2"):
        for _ in loader.epoch(0):
            got += 1
    assert got == 2 and _prefetch_threads() == []


def test_loader_rejects_bad_arguments():
    images = _images(4)
    with pytest.raises(ValueError, match="uint8"):
        _loader(images.astype(np.float32))
    with pytest.raises(ValueError, match="labels"):
        BatchLoader(images, np.zeros(3), mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="augment"):
        _loader(images, augment="fancy")
    with pytest.raises(ValueError, match="pca"):
        _loader(images, augment="paper")
    with pytest.raises(ValueError, match="start_batch"):
        _loader(images, batch_size=2).epoch(0, start_batch=3)


# --- load_images (predict) --------------------------------------------------------------

def test_load_images_of_any_size_and_mode(tmp_path):
    rgb = _images(1, 64, seed=8)[0]
    Image.fromarray(rgb).save(tmp_path / "big.png")
    Image.fromarray(rgb[:32, :32]).convert("L").save(tmp_path / "grey.jpg")
    Image.fromarray(rgb[:40, :20]).convert("RGBA").save(tmp_path / "alpha.png")
    paths = [tmp_path / "big.png", tmp_path / "grey.jpg", tmp_path / "alpha.png"]
    for size in (32, 224):
        x = load_images(paths, size, MEAN, STD)
        assert x.shape == (3, 3, size, size) and x.dtype == np.float32 and x.flags.c_contiguous
    x = load_images(paths[:1], 32, MEAN, STD)
    small = np.asarray(Image.fromarray(rgb).resize((32, 32), Image.Resampling.BICUBIC))
    np.testing.assert_allclose(x[0], _normalise(small[None])[0], atol=1e-5)


def test_load_images_names_the_unreadable_file(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match="cannot read image .*broken.jpg"):
        load_images([tmp_path / "ok.png", tmp_path / "broken.jpg"], 32, MEAN, STD)
    with pytest.raises(DataError, match="cannot read image .*missing.png"):
        load_images([tmp_path / "missing.png"], 32, MEAN, STD)
