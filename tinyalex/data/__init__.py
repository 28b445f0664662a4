"""tinyalex's data side: CIFAR-10 and image folders in, normalised float32 batches out.

    load_dataset(data, *, data_dir, val_size, seed, skip_bad_images, download) -> Dataset
    subset(images, labels, limit, seed, split) -> a seeded sample of a split (--limit-*)
    BatchLoader(images, labels, *, batch_size, train, augment, image_size, mean, std, pca,
                seed, prefetch, drop_last);  for x, y in loader.epoch(epoch, start_batch): ...
    eval_views(images, mode, image_size, mean, std) -> [x_view, ...]
    load_images(paths, image_size, mean, std) -> x
    add_data_arguments(parser)

Modules, in the order data flows through them:

    download.py    HTTP download with Range resume and md5 check; safe tar extraction
    cifar.py       the official archive: fetch, unpack, read the pickle batches
    folder.py      image folders: decode any image file, cache the decoded arrays
    dataset.py     load_dataset: pick the source, split off validation, mean/std/PCA
    transforms.py  augmentation and test-time views, as placements of each image
    pixels.py      the pixel loops (Numba) and their plain NumPy references
    loader.py      BatchLoader: shuffling, seeding, the prefetch thread
    args.py        the shared command-line options
    synthetic.py   tiny datasets in every supported format, for tests
    throughput.py  python -m tinyalex.data.throughput: images per second of the pipeline

Images stay uint8 (N, 32, 32, 3) until a batch is made; only batches are float32.
"""
from .args import add_data_arguments, recorded_source
from .dataset import Dataset, load_dataset, subset
from .loader import BatchLoader
from .transforms import eval_views, load_images

__all__ = ["Dataset", "load_dataset", "BatchLoader", "eval_views", "load_images",
           "add_data_arguments", "recorded_source", "subset"]
