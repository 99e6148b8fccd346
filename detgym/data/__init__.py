"""Datasets for detgym: the embedded synthetic ``digits`` set (default), COCO-format and Pascal VOC.

Every loader returns a :class:`DetectionDataset` (one split held in memory as uint8 tensors):

>>> from detgym.data import digits_dataset
>>> train = digits_dataset("train", seed=0)          # generated once, cached as COCO JSON + PNG
>>> images, targets = train.batch([0, 1, 2])          # float32 [3, H, W] in 0..1, xyxy boxes, labels 1..10
"""

from .coco import load_coco, write_coco
from .dataset import DetectionDataset
from .digits import (
    DIGIT_CATEGORIES,
    GENERATOR_VERSION,
    SPLIT_DIRS,
    SPLITS,
    DigitsConfig,
    canonical_split,
    clear_memory_cache,
    digits_cache_dir,
    digits_dataset,
    generate_digits,
    render_digits_image,
    write_digits,
)
from .io import atomic_directory, atomic_write_bytes, atomic_write_json, cache_root, read_image, write_image
from .load import DATASET_NAMES, coco_split_files, load_dataset
from .voc import VOC_CLASSES, find_voc_root, load_voc

__all__ = [
    "DetectionDataset",
    "DigitsConfig",
    "DIGIT_CATEGORIES",
    "GENERATOR_VERSION",
    "SPLITS",
    "SPLIT_DIRS",
    "DATASET_NAMES",
    "VOC_CLASSES",
    "canonical_split",
    "clear_memory_cache",
    "digits_cache_dir",
    "digits_dataset",
    "generate_digits",
    "render_digits_image",
    "write_digits",
    "load_coco",
    "write_coco",
    "load_voc",
    "find_voc_root",
    "load_dataset",
    "coco_split_files",
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_json",
    "cache_root",
    "read_image",
    "write_image",
]
