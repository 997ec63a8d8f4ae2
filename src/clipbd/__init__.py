"""clipbd: backdoor attacks on CLIP and the defenses that purify them, as a Snakemake workflow."""
from clipbd import _compat  # noqa: F401  (sets HF_HUB_OFFLINE; torchvision/open_clip: _compat.import_open_clip)

__version__ = "0.1.0"
