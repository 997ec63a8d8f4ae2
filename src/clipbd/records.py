"""What a job records beside its outputs: their sidecars (clipbd.artifacts.write_sidecar),
logged, and the key of a resumable job's state."""
from __future__ import annotations

import hashlib
import json
import logging

from clipbd import artifacts


def record(out, step: str, cfg, inputs: list[str], code: str, seed: int | None, started: float,
           **extra) -> dict:
    """A job's sidecar for `out` (empty inputs dropped), logged with the artifact's hash."""
    info = artifacts.write_sidecar(out, step=step, config=cfg, inputs=[i for i in inputs if i],
                                   code=code, seed=seed, started=started, extra=extra or None)
    logging.getLogger("clipbd").info("wrote %s (%s) in %.1fs", out, info["sha256"][:12],
                                     info["wall_time_s"])
    return info


def config_hash(obj) -> str:
    """Short sha256 of a JSON-able value, keys sorted (what a resumable job's state is for)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def record_outputs(outs: list[str], step: str, inputs: list[str], code: str, started: float,
                   config: dict | None = None) -> None:
    """The sidecars of a report job's outputs (tables, figures: no seed; `config` what the
    report took as a setting, default none)."""
    for out in filter(None, outs):
        artifacts.write_sidecar(out, step=step, config=config or {}, inputs=inputs, code=code,
                                seed=None, started=started)
