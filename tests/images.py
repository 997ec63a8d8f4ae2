"""Hand-made image sets for the tests."""
import torch

from clipbd.data.store import ImageSet


def random_set(n: int, classes: list[str], prefix: str, seed: int, size: int = 32) -> ImageSet:
    """n uniform-noise uint8 images, labels cycling over `classes`, ids `<prefix>/<i>`."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % len(classes), classes,
                    [f"{prefix}/{i}" for i in range(n)])
