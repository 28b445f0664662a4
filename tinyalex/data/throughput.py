"""How fast the data pipeline makes batches: ``python -m tinyalex.data.throughput [--data PATH]``.

Measures, on one core (no prefetch thread, single-threaded kernels), the images per
second of training batches for the 32x32 model (random mirror, alone and with crops) and the 224x224
model (bilinear upscaling + mirror; and the paper's 256-resize + 224 crop + lighting), and
of the 10-crop test views. Targets: >= 5,000 img/s at 32x32, >= 600 img/s at 224x224,
so that the pipeline never holds up training (the model trains at about 100 img/s and
20 img/s respectively on this kind of machine).

Without ``--data`` it uses the official CIFAR-10 (downloaded if needed); ``--synthetic N``
skips loading and uses N random images. Each measurement runs for about ``--seconds``.
"""
import argparse
import time

import numpy as np

from .args import add_data_arguments
from .dataset import load_dataset
from .loader import BatchLoader
from .transforms import eval_views


def rate(make_batches, seconds: float) -> float:
    """Images per second of ``make_batches()`` (an iterable of (x, y)), after one warm-up batch."""
    batches = iter(make_batches())
    next(batches)                               # compiles / loads the Numba kernels
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        try:
            x, _ = next(batches)
        except StopIteration:
            batches = iter(make_batches())
            continue
        images += len(x)
    return images / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="use N random images instead of loading a dataset")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args(argv)

    if args.synthetic:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (args.synthetic, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, args.synthetic)
        mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
        pca = (np.array([0.1, 0.01, 0.001], np.float32), np.eye(3, dtype=np.float32))
        print(f"synthetic: {args.synthetic} random images")
    else:
        start = time.perf_counter()
        ds = load_dataset(args.data, data_dir=args.data_dir, val_size=args.val_size,
                          skip_bad_images=args.skip_bad_images)
        print(f"loaded {ds.summary()} in {time.perf_counter() - start:.2f} s")
        images, labels = ds.train_x, ds.train_y
        mean, std, pca = ds.mean, ds.std, (ds.pca_eigval, ds.pca_eigvec)

    def train(size, augment):
        loader = BatchLoader(images, labels, batch_size=args.batch_size, augment=augment,
                             image_size=size, mean=mean, std=std, pca=pca, prefetch=0)
        return lambda: loader.epoch(0)

    def views(size, mode):
        def batches():
            for b in range(0, len(images), args.batch_size):
                for x in eval_views(images[b:b + args.batch_size], mode, size, mean, std):
                    yield x, None
        return batches

    print(f"one core, batch {args.batch_size}, images/s (views/s for test-time views):")
    for name, make, target in [
            ("train 32x32 flip (mirror: the default)", train(32, "flip"), 5000),
            ("train 32x32 basic (pad-4 crop + mirror)", train(32, "basic"), 5000),
            ("train 32x32 paper (+ PCA lighting)", train(32, "paper"), 5000),
            ("train 224x224 basic (bilinear upscale + mirror)", train(224, "basic"), 600),
            ("train 224x224 paper (256 resize, 224 crop, mirror, lighting)",
             train(224, "paper"), 600),
            ("test views 224x224 10crop", views(224, "10crop"), None)]:
        r = rate(make, args.seconds)
        verdict = "" if target is None else f"  (target {target}: {'ok' if r >= target else 'SLOW'})"
        print(f"  {name:62s} {r:9.0f}{verdict}", flush=True)


if __name__ == "__main__":
    main()
