"""A small fitted `tiny` model and its checkpoint, for the tests of neighbours, saliency and export.

Fresh random weights predict one class for every image, and a few dozen SGD steps on a busy
2-core machine take half a minute and may still sit at chance (AlexNet's early plateau). So
the model is fitted instead: random convolutions and fc6/fc7 (He init), then fc8 by least
squares on fc7's features of the synthetic class templates (tinyalex.data.synthetic,
seed 0). Its predictions differ from image to image and its fc7 features separate the
classes, as a trained checkpoint's do, and it takes a fraction of a second.
"""

import numpy as np

from tinyalex.checkpoint import save_checkpoint
from tinyalex.data.synthetic import CLASSES, make_images
from tinyalex.model import build_model

# Deliberately not the data's statistics: the commands must use the checkpoint's.
MEAN = np.array([0.45, 0.50, 0.55], np.float32)
STD = np.array([0.22, 0.25, 0.28], np.float32)
VAL_SIZE, SEED = 10, 3


def normalise(images):
    """uint8 NHWC (any float NHWC) -> float32 NCHW with MEAN/STD."""
    x = (np.asarray(images, np.float64) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def fitted_tiny(seed=3, dtype=np.float32):
    """A tiny model whose fc8 is fitted by least squares to make_images' classes (seed 0)."""
    images, labels = make_images(200, 10, seed=0)
    model = build_model("tiny", 10, init="he", seed=seed, dtype=dtype)
    h = model.forward(normalise(images).astype(dtype), upto="relu7").astype(np.float64)
    design = np.c_[h, np.ones(len(h))]                                   # (N, hidden + 1)
    coef = np.linalg.lstsq(design, 5.0 * np.eye(10)[labels], rcond=None)[0]
    model.params["fc8.w"] = np.ascontiguousarray(coef[:-1].T, dtype)
    model.params["fc8.b"] = coef[-1].astype(dtype)
    return model


def write_checkpoint(path, model, **meta):
    """A checkpoint as train.py writes it (without optimizer state)."""
    full = {"model": model.name, "num_classes": model.num_classes, "classes": list(CLASSES),
            "image_size": model.input_shape[1], "init": "he", "epoch": 1, "batch": 0,
            "config": {"data": None, "val_size": VAL_SIZE, "seed": SEED, "batch_size": 20},
            "metrics": [], "best_val_acc": 0.5}
    full.update(meta)
    save_checkpoint(path, params=model.params, optimizer={},
                    arrays={"mean": MEAN, "std": STD, "pca_eigval": np.ones(3, np.float32),
                            "pca_eigvec": np.eye(3, dtype=np.float32)},
                    meta=full)
    return str(path)
