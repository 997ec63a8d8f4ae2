"""Datasets: prepared splits stored as safetensors (uint8 HWC images + int64 labels)."""
from clipbd.data.store import ImageSet, load_split, save_split, to_float, to_uint8

__all__ = ["ImageSet", "dataset_classes", "load_split", "missing_paths", "read_entries",
           "read_split", "save_split", "to_float", "to_uint8", "CAPTION_KINDS", "FILE_KINDS"]

# Dataset kinds read from user-provided files: module with classes(ds), missing(name, ds),
# entries(ds, split, seed, name) (what `prepare` decodes and streams) and
# load(ds, split, image_size, seed, name) (the same, decoded in memory).
# (fashion_mnist and synthetic predate this table.)
FILE_KINDS = {"image_folder": "clipbd.data.image_folder", "caption_csv": "clipbd.data.caption_csv",
              "webdataset": "clipbd.data.webdataset"}
# Caption corpora (CC3M: a CSV, or img2dataset's tar shards): no classes, no target.
CAPTION_KINDS = ("caption_csv", "webdataset")


def _reader(kind: str):
    import importlib

    return importlib.import_module(FILE_KINDS[kind])


def dataset_classes(ds: dict) -> list[str]:
    """Class names of a dataset config block (`datasets.<name>`), in label order."""
    if ds["kind"] in FILE_KINDS:
        return list(_reader(ds["kind"]).classes(ds))
    if ds["kind"] == "fashion_mnist":
        from clipbd.data.fashion_mnist import CLASSES
    else:
        from clipbd.data.synthetic import CLASSES
    return list(CLASSES)


def missing_paths(name: str, ds: dict) -> list[tuple[str, str, str]]:
    """(config key, path, fix) per missing file or folder of a dataset block."""
    if ds["kind"] in FILE_KINDS:
        return _reader(ds["kind"]).missing(name, ds)
    if ds["kind"] == "fashion_mnist":
        from pathlib import Path

        from clipbd.data.fashion_mnist import DEBIAN_ROOT, raw_files

        root = ds.get("path", DEBIAN_ROOT)
        absent = [f for f in raw_files(root) if not Path(f).is_file()]
        if absent:
            return [(f"datasets.{name}.path", absent[0] if len(absent) < 4 else root,
                     "install the Debian package dataset-fashion-mnist (apt-get install "
                     "dataset-fashion-mnist) or set it to a folder holding the four IDX .gz files")]
    return []


def read_entries(name: str, ds: dict, split: str, seed: int):
    """The `Entries` (sources, labels, ids, captions) of a split of a file-backed dataset."""
    return _reader(ds["kind"]).entries(ds, split, seed, name)


def read_split(name: str, ds: dict, split: str, image_size: int, seed: int) -> ImageSet:
    """A split of a file-backed dataset (kinds in FILE_KINDS)."""
    return _reader(ds["kind"]).load(ds, split, image_size, seed, name)
