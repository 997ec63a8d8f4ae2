"""Periodic, atomic training state (model + optimizer + step) so a killed job resumes."""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

from clipbd.artifacts import _hold, load_tensors, save_tensors

EVERY_ENV = "CLIPBD_STATE_EVERY_S"  # seconds between state saves (default 60; 0 = every step)

log = logging.getLogger(__name__)


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(opt, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict = {}
    for key, v in tensors.items():
        _, pid, k = key.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class TrainState:
    """`<output>.state.safetensors`, saved every `every_s` seconds; tied to a config hash."""

    def __init__(self, output: str, config_hash: str, every_s: float | None = None):
        self.path = Path(str(output) + ".state.safetensors")
        self.config_hash = config_hash
        self.every_s = float(os.environ.get(EVERY_ENV, 60.0)) if every_s is None else every_s
        self._last = time.time()
        self.extra: dict[str, torch.Tensor] = {}  # what `maybe_save(extra=...)` stored, once loaded

    def load(self, model, opt) -> int:
        """Restore and return the step to continue from (0 if there is nothing to resume)."""
        if not self.path.exists():
            return 0
        try:
            tensors, meta = load_tensors(self.path)
        except ValueError as err:
            log.warning("ignoring unreadable training state %s: %s", self.path, err)
            return 0
        if meta.get("config_hash") != self.config_hash:
            log.warning("ignoring training state %s: it was made with another config", self.path)
            return 0
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
        _unflatten_optimizer(opt, {k: v for k, v in tensors.items() if k.startswith("opt.")},
                             meta["optimizer"])
        log.info("resuming from step %d (%s)", meta["step"], self.path)
        return int(meta["step"])

    def maybe_save(self, model, opt, step: int, force: bool = False,
                   extra: dict[str, torch.Tensor] | Callable[[], dict] | None = None) -> None:
        """Save if `every_s` passed; `extra` tensors (a generator's state, losses) come back
        in `self.extra` after `load`. `extra` may be a function, called only when saving."""
        if not force and time.time() - self._last < self.every_s:
            return
        if callable(extra):
            extra = extra()
        tensors, opt_meta = _flatten_optimizer(opt)
        tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
        tensors.update({f"extra.{k}": v for k, v in (extra or {}).items()})
        save_tensors(self.path, tensors,
                     {"step": step, "config_hash": self.config_hash, "optimizer": opt_meta})
        self._last = time.time()
        _hold()

    def clear(self) -> None:
        if self.path.exists():
            os.unlink(self.path)


_AMBIENT: dict | None = None


@contextmanager
def resumable(output: str, config_hash: str) -> Iterator[None]:
    """Training loops deep inside a step (a defense's `fit`) find their state via `ambient`.

    The states are removed when the block finishes without error; a killed job keeps them.
    """
    global _AMBIENT
    _AMBIENT = {"output": str(output), "hash": config_hash, "states": []}
    try:
        yield
        for st in _AMBIENT["states"]:
            st.clear()
    finally:
        _AMBIENT = None


def ambient(name: str) -> TrainState | None:
    """The state of loop `name` of the running step (`<output>.<name>.state.safetensors`), or
    None outside `resumable` (unit tests, library use)."""
    if _AMBIENT is None:
        return None
    st = TrainState(f"{_AMBIENT['output']}.{name}", _AMBIENT["hash"])
    _AMBIENT["states"].append(st)
    return st
