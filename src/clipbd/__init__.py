"""clipbd: backdoor attacks on CLIP and the defenses that purify them, as a Snakemake workflow."""
from clipbd import _compat  # noqa: F401  (must run before torchvision/open_clip are imported)

__version__ = "0.1.0"
