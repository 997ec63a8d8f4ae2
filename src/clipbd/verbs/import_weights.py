"""`import-weights`: a CLIP weight file converted once into clipbd's safetensors + sidecar.

Run by hand before a study (no rule calls it); the one place a foreign file may be unpickled
(clipbd.models.convert says exactly what each format executes)."""
from __future__ import annotations

from clipbd.models.convert import HELP
from clipbd.verbs import arg, verb


def _convert(args) -> int:
    from clipbd.models import convert

    return convert.main(args)


verb("import-weights", "Convert a CLIP weight file (OpenAI TorchScript, open_clip .pt/.bin, "
     "safetensors) once into clipbd's safetensors + sidecar.",
     arg("src", metavar="SRC", help="the weight file (formats below)"),
     arg("--arch", help="open_clip architecture, e.g. ViT-B-32-quickgelu"),
     arg("--activation", default="", choices=["quick_gelu", "gelu"],
         help="what the weights were trained with (open_clip files only; OpenAI's is quick_gelu)"),
     arg("--out", help="the clipbd safetensors file to write"),  # not an output: SRC is kept
     job=False, epilog=HELP)(_convert)
