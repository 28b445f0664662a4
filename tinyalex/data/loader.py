"""Mini-batches for training and evaluation, prepared by a background thread.

Reproducibility: every random choice is a pure function of ``(seed, epoch, batch index)``.
The epoch's shuffle comes from a generator seeded with ``[seed, 0, epoch, 0]`` and batch
``b``'s crops, mirrors and lighting from one seeded with ``[seed, 1, epoch, b]`` (NumPy's
``SeedSequence`` turns such a list into independent streams). No state carries over from
one batch to the next, so

* resuming at ``(epoch, start_batch)`` yields exactly the batches an uninterrupted run
  would have yielded from there on, and
* the prefetch thread gives the same batches as computing them one by one in the loop.

Prefetch: a daemon thread fills a bounded queue (``prefetch`` batches) while the model
computes; the pixel kernels release the GIL, so the two really run at the same time. When
the consumer stops early (``break``, an exception, Ctrl-C) the generator's ``finally``
tells the thread to stop and joins it. A ``for`` loop closes the generator as soon as it
is left; if you keep the generator in a variable, call its ``close()`` (or wrap it in
``contextlib.closing``) when you are done with it.
"""
import queue
import threading

import numpy as np

from .transforms import (AUGMENTS, DEFAULT_AUGMENT, apply_cutout, check_images, cutout_squares, render,
                         train_placement, view_placements)


class _Failure:
    """An exception raised in the prefetch thread, carried to the consumer."""

    def __init__(self, error):
        self.error = error


_DONE = object()


class BatchLoader:
    """Iterate over (x, y) mini-batches: x float32 (B, 3, S, S) normalised, y int64 (B,).

    ``train=True`` shuffles every epoch and applies ``augment`` (and ``cutout``, a square's
    side, 0 for none); ``train=False`` keeps the
    order and only resizes to ``image_size`` (validation and test). ``len(loader)`` is the
    number of batches per epoch; the last one is smaller unless ``drop_last``.
    """

    def __init__(self, images, labels, *, batch_size=128, train=True, augment=DEFAULT_AUGMENT,
                 image_size=32, mean, std, pca=None, seed=0, prefetch=2, drop_last=False,
                 cutout=0):
        self.images = check_images(images)
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        if train and augment == "paper" and pca is None:
            raise ValueError("augment='paper' needs pca=(eigval, eigvec) for the lighting")
        if int(seed) < 0 or int(prefetch) < 0 or int(cutout) < 0:
            raise ValueError("seed, prefetch and cutout must be >= 0")
        self.mean = np.asarray(mean, np.float32).reshape(3)
        self.std = np.asarray(std, np.float32).reshape(3)
        if not (self.std > 0).all():
            raise ValueError(f"std must be positive, got {self.std}")
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.augment = augment if train else "none"
        self.cutout = int(cutout) if train else 0
        self.image_size = int(image_size)
        self.pca = pca
        self.seed = int(seed)
        self.prefetch = int(prefetch)
        self.drop_last = bool(drop_last)

    def __len__(self) -> int:
        n, b = len(self.images), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    # --- one batch, as a pure function of (seed, epoch, batch index) ------------------
    def order(self, epoch: int) -> np.ndarray:
        """Image indices of the epoch, in batch order."""
        if not self.train:
            return np.arange(len(self.images))
        return np.random.default_rng([self.seed, 0, epoch, 0]).permutation(len(self.images))

    def batch(self, order: np.ndarray, epoch: int, b: int):
        """Batch ``b`` of the epoch whose ``order`` is given."""
        index = order[b * self.batch_size:(b + 1) * self.batch_size]
        if self.train:
            rng = np.random.default_rng([self.seed, 1, epoch, b])
            placement = train_placement(rng, len(index), side=self.images.shape[1],
                                        size=self.image_size, augment=self.augment, pca=self.pca)
        else:
            placement = view_placements(len(index), side=self.images.shape[1],
                                        size=self.image_size, mode="none")[0]
        x = render(self.images, index, placement, size=self.image_size, mean=self.mean,
                   std=self.std)
        if self.cutout:
            apply_cutout(x, cutout_squares(rng, len(index), size=self.image_size, cutout=self.cutout))
        return x, self.labels[index]

    # --- the epoch ----------------------------------------------------------------------
    def epoch(self, epoch: int, start_batch: int = 0):
        """Generator of the epoch's batches from ``start_batch`` on."""
        if int(epoch) < 0 or not 0 <= int(start_batch) <= len(self):
            raise ValueError(f"need epoch >= 0 and 0 <= start_batch <= {len(self)}, "
                             f"got {epoch}, {start_batch}")
        epoch, start_batch = int(epoch), int(start_batch)
        order = self.order(epoch)
        if self.prefetch == 0:
            return (self.batch(order, epoch, b) for b in range(start_batch, len(self)))
        return self._prefetched(order, epoch, start_batch)

    def __iter__(self):
        return self.epoch(0)

    def _prefetched(self, order, epoch, start_batch):
        slots = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():          # wake up now and then to see if we must stop
                try:
                    slots.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    pass
            return False

        def produce():
            try:
                for b in range(start_batch, len(self)):
                    if not put(self.batch(order, epoch, b)):
                        return
                put(_DONE)
            except BaseException as e:         # hand it to the consumer
                put(_Failure(e))

        worker = threading.Thread(target=produce, name="tinyalex-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = slots.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            stop.set()
            worker.join()
