"""Datasets: prepared splits stored as safetensors (uint8 HWC images + int64 labels)."""
from clipbd.data.store import ImageSet, load_split, save_split, to_float, to_uint8

__all__ = ["ImageSet", "load_split", "save_split", "to_float", "to_uint8"]
