"""Environment fixes that must run before torchvision / open_clip are imported.

Nothing heavy is imported here: torchvision (about 1 s, it pulls in torch._dynamo) and
open_clip load only in the jobs that build a model, through `import_open_clip()` (or
`import_torchvision()`); the data, poisoning and report jobs never pay for them.

* ``HF_HUB_OFFLINE=1``: no model hub is reachable here or on most cluster nodes; a hub
  name would otherwise retry for a minute before failing.
* torchvision's PyPI wheel is a CUDA build. Paired with a CPU-only torch its C++ ops are
  not registered, and ``import torchvision`` dies in its meta registrations with
  "operator torchvision::nms does not exist". We define the op *schemas* (no kernels)
  so the import succeeds; the detection ops stay unusable, and clipbd never calls them.
  The shim is a no-op when the real ops exist.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The only ops torchvision registers unconditionally at import (``register_fake``); the
# others are registered only when its C++ extension loaded.
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIB = None  # keeps the torch.library.Library alive for the life of the process


def _define_schemas() -> None:
    global _LIB
    import torch

    _LIB = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _LIB.define(schema)


def import_torchvision():
    """Import torchvision; on the CPU-torch + CUDA-torchvision mismatch, shim and retry once."""
    try:
        import torchvision
    except RuntimeError as err:
        if "torchvision::" not in str(err) or _LIB is not None:
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _define_schemas()
        import torchvision
    return torchvision


def import_open_clip():
    """Import open_clip (which imports torchvision) behind the shim above."""
    import_torchvision()
    import open_clip

    return open_clip
