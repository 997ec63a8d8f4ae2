"""Where and how a job computes: the config's `accelerator` block, read from the environment.

The Snakefile exports `accelerator` to every job (`CLIPBD_DEVICE`, `CLIPBD_AMP`,
`CLIPBD_COMPILE`; `export` below), so one setting reaches every verb without a flag on every
rule. These are execution options, like threads: changing them reruns nothing, and every
sidecar records the values a job ran with (`describe`).

* device `auto` (default): CUDA when the job sees a GPU, else CPU; `cpu` / `cuda` force one.
* amp `bf16`: forward passes under bfloat16 autocast (training and evaluation); `none` (default)
  keeps float32 — bit-for-bit results, as the determinism tests require.
* compile: `torch.compile` on the image/text encoders of training and evaluation loops.
* Host -> device copies come from pinned memory when the device is CUDA (`batches`).
"""
from __future__ import annotations

import contextlib
import os

import torch

ENV = {"device": "CLIPBD_DEVICE", "amp": "CLIPBD_AMP", "compile": "CLIPBD_COMPILE"}
DEFAULTS = {"device": "auto", "amp": "none", "compile": False}


def export(cfg: dict) -> None:
    """Set the job environment from the config's `accelerator` block (Snakefile, at parse)."""
    for key, var in ENV.items():
        value = cfg.get(key, DEFAULTS[key])
        os.environ[var] = ("1" if value else "0") if isinstance(value, bool) else str(value)


def settings() -> dict:
    raw = {k: os.environ.get(v, "") for k, v in ENV.items()}
    return {"device": raw["device"] or DEFAULTS["device"], "amp": raw["amp"] or DEFAULTS["amp"],
            "compile": raw["compile"] == "1"}


def device() -> torch.device:
    want = settings()["device"]
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("accelerator.device is 'cuda' but this job sees no CUDA device: "
                           "request a GPU for the rule (resources gpu) or set "
                           "accelerator.device to auto")
    return torch.device(want)


_PLACED: set[str] = set()  # devices this process put a model on (what `describe` reports)


def place(model: torch.nn.Module) -> torch.nn.Module:
    """The model on the job's device (in place; returned for chaining). Every job that
    computes with a model goes through here, so its sidecar can say where it ran."""
    dev = device()
    _PLACED.add(str(dev))
    return model.to(dev)


def device_of(module: torch.nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    if p is None:
        p = next(module.buffers(), None)
    return p.device if p is not None else torch.device("cpu")


def to(x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """A host batch on `dev`; through pinned memory when copying to CUDA."""
    if dev.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(dev, non_blocking=True)
    return x.to(dev)


def autocast(dev: torch.device):
    """bfloat16 autocast on `dev` when `accelerator.amp` is bf16, else a no-op."""
    if settings()["amp"] == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compiled(fn):
    """torch.compile(fn) when `accelerator.compile` is on, else fn."""
    return torch.compile(fn) if settings()["compile"] else fn


def describe() -> dict:
    """What a sidecar records about the job's execution: `ran_on` is the device the job's
    models were placed on (`place`), "cpu" for a job that placed none (data, poisoning,
    reports: host code only), whatever GPU the job could see."""
    ran_on = ",".join(sorted(_PLACED)) or "cpu"
    info = {**settings(), "ran_on": ran_on, "torch": torch.__version__}
    if "cuda" in ran_on:
        info["gpu"] = torch.cuda.get_device_name(torch.device(sorted(_PLACED)[0]))
    return info
