"""Datasets: prepared splits stored as safetensors (uint8 HWC images + int64 labels)."""
from clipbd.data.store import ImageSet, load_split, save_split, to_float, to_uint8

__all__ = ["ImageSet", "dataset_classes", "load_split", "save_split", "to_float", "to_uint8"]


def dataset_classes(ds: dict) -> list[str]:
    """Class names of a dataset config block (`datasets.<name>`), in label order."""
    if ds["kind"] == "fashion_mnist":
        from clipbd.data.fashion_mnist import CLASSES
    else:
        from clipbd.data.synthetic import CLASSES
    return list(CLASSES)
