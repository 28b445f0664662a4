"""The data options the tinyalex commands share, each declared once here: --data, --data-dir,
--split, --skip-bad-images (a command may word a help text its own way), and train's whole
group (add_data_arguments); and where a command on a trained model takes its images from
when --data is not given (recorded_source)."""
import argparse
import os

from ..argtypes import non_negative_int, non_empty_path
from ..errors import DataError
from .transforms import AUGMENTS, DEFAULT_AUGMENT


DATA_HELP = ("an extracted cifar-10-batches-py directory (or a directory holding one), a "
             ".tar.gz archive, or an image folder ROOT/train/<class>/* [+ ROOT/test/<class>/*] "
             "or ROOT/<class>/*; default: the official CIFAR-10, downloaded into --data-dir")


def add_source_arguments(parser, data_help=DATA_HELP):
    """--data PATH and --data-dir DIR: where the images come from."""
    parser.add_argument("--data", metavar="PATH", type=non_empty_path, default=None, help=data_help)
    parser.add_argument("--data-dir", metavar="DIR", type=non_empty_path, default=None,
                        help="where downloads, unpacked archives and the image cache go "
                             "(default: $TINYALEX_DATA_DIR, else ./data)")


def add_split_argument(parser, help):
    """--split test|val: which of a trained model's splits (default: the test split if any)."""
    parser.add_argument("--split", choices=("test", "val"), default=None, help=help)


def add_skip_bad_images_argument(parser, help="skip unreadable files of an image folder with a warning"):
    parser.add_argument("--skip-bad-images", action="store_true", help=help)


def add_data_arguments(parser: argparse.ArgumentParser):
    """Add --data, --data-dir, --val-size, --augment, --cutout, --skip-bad-images; returns the group."""
    group = parser.add_argument_group("data")
    add_source_arguments(group)
    group.add_argument("--val-size", type=non_negative_int, default=None, metavar="N",
                       help="training images held out for validation, class-balanced "
                            "(default: a tenth of them, at most 5000: 5000 for CIFAR-10; 0 "
                            "trains on all of them); config.json records the number taken")
    group.add_argument("--augment", choices=AUGMENTS, default=DEFAULT_AUGMENT,
                       help="training augmentation: none; flip = random mirror, of the image "
                            "upscaled to 224 for the paper model (default); basic = flip + random "
                            "crop of the 4-padded image (32x32); paper = upscale to 256, random "
                            "224 crops and mirrors, PCA lighting")
    group.add_argument("--cutout", type=non_negative_int, default=0, metavar="K",
                       help="also blank a random KxK square of each training image (set to the "
                            "mean colour; cutout, DeVries and Taylor 2017); default 0: none")
    add_skip_bad_images_argument(group, "skip unreadable image files with a warning instead of stopping")
    return group


def recorded_source(meta, data, data_dir):
    """(data, data_dir, how) for a command on a trained model (`evaluate`, `neighbours`): each
    as given, else as the run recorded it in the checkpoint, so that the images the model was
    trained on are found again without a download. `how` says which, for the command's
    report: "" when both were given, else " (--data as recorded in the checkpoint)" or the
    like."""
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    taken = []
    recorded = config.get("data")
    if data is None and isinstance(recorded, str) and recorded:
        if not os.path.exists(recorded):
            raise DataError(f"the checkpoint was trained on --data {recorded}, which is not "
                            f"there any more; pass --data with the images to use")
        data = recorded
        taken.append("--data")
    recorded = config.get("data_dir")
    if data_dir is None and isinstance(recorded, str) and recorded and os.path.isdir(recorded):
        data_dir = recorded
        taken.append("--data-dir")
    how = f" ({' and '.join(taken)} as recorded in the checkpoint)" if taken else ""
    return data, data_dir, how
