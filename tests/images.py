"""Hand-made image sets for the tests."""
import torch

from clipbd.data.store import ImageSet


def random_set(n: int, classes: list[str], prefix: str, seed: int, size: int = 32) -> ImageSet:
    """n uniform-noise uint8 images, labels cycling over `classes`, ids `<prefix>/<i>`."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % len(classes), classes,
                    [f"{prefix}/{i}" for i in range(n)])


FM = ["bag", "coat", "sneaker", "shirt"]


def trigger_corpus() -> list[tuple[str, ImageSet, list[str]]]:
    """Two small captioned datasets; the target class `sneaker` lives in "fm"."""
    return [("fm", random_set(80, FM, "fm", 0), ["a {}."]),
            ("sh", random_set(40, ["circle", "square"], "sh", 1), ["a {} shape."])]


def trigger_context(model, parts, seed: int = 0):
    """A TriggerContext for a learned trigger against `model`, target fm/sneaker."""
    from clipbd.attacks.base import TriggerContext
    from clipbd.models import clip

    return TriggerContext(model, clip.tokenizer("clipbd-tiny-vit"), parts, "fm", "sneaker",
                          ["a photo of a {}."], seed)
