"""The data options every tinyalex command shares."""
import argparse

from ..argtypes import non_negative_int
from .transforms import AUGMENTS


def add_data_arguments(parser: argparse.ArgumentParser):
    """Add --data, --data-dir, --val-size, --augment, --skip-bad-images; returns the group."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", metavar="PATH", default=None,
                       help="an extracted cifar-10-batches-py directory (or a directory "
                            "holding one), a .tar.gz archive, or an image folder "
                            "ROOT/train/<class>/* [+ ROOT/test/<class>/*] or ROOT/<class>/*; "
                            "default: the official CIFAR-10, downloaded into --data-dir")
    group.add_argument("--data-dir", metavar="DIR", default=None,
                       help="where downloads, unpacked archives and the image cache go "
                            "(default: $TINYALEX_DATA_DIR, else ./data)")
    group.add_argument("--val-size", type=non_negative_int, default=5000, metavar="N",
                       help="training images held out for validation, class-balanced "
                            "(default 5000; 0 trains on all of them)")
    group.add_argument("--augment", choices=AUGMENTS, default="basic",
                       help="training augmentation: none; basic = random mirror + random "
                            "crop of the 4-padded image (32x32) or upscaling (224); paper = "
                            "upscale to 256, random 224 crops and mirrors, PCA lighting "
                            "(default basic)")
    group.add_argument("--skip-bad-images", action="store_true",
                       help="skip unreadable image files with a warning instead of stopping")
    return group
