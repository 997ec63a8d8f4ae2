"""What the current code and config would record for an artifact: its code fingerprint and the
parts of its resolved step config that come from the study config.

Rules pass each step a slice of the resolved config (workflow/rules/common.smk); a sidecar
records that slice. An artifact is stale when a recorded value differs from the current one.
"""
from __future__ import annotations

import json
from pathlib import Path

from clipbd.fingerprint import defend_files, fingerprint, method_files
from clipbd.grid import real_trigger, resolved_params

ATTACK_STEPS = ("trigger", "learn_trigger", "poison", "poison_test")
DEFENSE_STEPS = ("defend", "evaluate")
GLOBAL_KEYS = ("model", "pretrain", "backdoor", "seed", "image_size", "eval_batch_size")
# Steps on the grid's seed axis: their `seed` is the run seed in their path (`seed~<s>`), not
# the global one (the few-shot draw's path ends in `seed~<s>.json`).
RUN_SEEDED = ("fewshot", "backdoor", *ATTACK_STEPS)


def _norm(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def method(step: str, cfg: dict) -> tuple[str, str] | None:
    """(kind, name) of the attack or defense a step's config is about."""
    if step in ATTACK_STEPS and "attack" in cfg:
        return "attack", cfg["attack"]
    if step in DEFENSE_STEPS and "defense" in cfg:
        return "defense", cfg["defense"]
    return None


def code(step: str, cfg: dict) -> str | None:
    """The fingerprint the current sources give this step (None: step unknown here)."""
    stage = step  # a sidecar's step is its verb module (clipbd.fingerprint.stage_files)
    try:
        m = method(step, cfg)
        if step == "defend" and m:
            attack = cfg["row"]["attack"]
            return fingerprint(stage, *defend_files(m[1], attack,
                                                    real_trigger(attack, cfg["params"])))
        return fingerprint(stage, *(method_files(*m) if m else ()))
    except (KeyError, ValueError):
        return None


def _attack_variant(path: str, cfg: dict) -> str | None:
    parts = Path(path).parts
    for i in range(1, len(parts) - 1):
        if parts[i] == cfg["attack"] and parts[i - 1] == cfg.get("target_dataset"):
            return parts[i + 1]
    return None


def _imported_diffs(recorded: dict, cur: dict, path: str) -> list[str] | None:
    """An imported clean model (`model.weights`, or a `models.<name>` backbone) records what
    the `pretrain`/`import_model` rules pass it (workflow/rules/params.smk, common.smk): its
    own model block, `pretrain: {}` and the seed. None: not an imported model."""
    parts = Path(path).parts
    backbone = parts[-2] if len(parts) >= 3 and parts[-3] == "clean" else None
    key = f"models.{backbone}" if backbone else "model"
    model = cur.get("models", {}).get(backbone) if backbone else cur.get("model")
    if model is None:
        return [key]
    if not model.get("weights"):
        return None
    want = {"model": model, "pretrain": {}, "seed": cur.get("seed")}
    return [key if k == "model" else k for k in want if k in recorded and recorded[k] != want[k]]


def path_seed(path: str) -> int | None:
    """The run seed a path spells (`…/seed~<s>/…` or `…/seed~<s>.json`), else None."""
    for part in reversed(Path(path).parts):
        name = part.split(".", 1)[0]
        if name.startswith("seed~") and name[5:].isdigit():
            return int(name[5:])
    return None


def _seed_diff(step: str, recorded: dict, cur: dict, path: str) -> bool:
    if step in RUN_SEEDED:
        return recorded["seed"] != path_seed(path)
    return recorded["seed"] != cur["seed"]


def config_diffs(step: str, recorded: dict, current: dict, path: str) -> list[str]:
    """Config keys whose recorded value differs from the current resolved config."""
    if not isinstance(recorded, dict) or not recorded:
        return []
    cur = _norm(current)
    imported = _imported_diffs(recorded, cur, path) if step == "pretrain" else None
    if imported is not None:
        return imported
    diffs = [k for k in GLOBAL_KEYS if k in recorded and k in cur
             and (_seed_diff(step, recorded, cur, path) if k == "seed" else recorded[k] != cur[k])]
    datasets = recorded.get("datasets")
    if isinstance(datasets, dict):
        diffs += [f"datasets.{n}" for n, d in datasets.items() if cur["datasets"].get(n) != d]
    if step == "prepare" and isinstance(recorded.get("dataset"), dict):
        if cur["datasets"].get(recorded.get("name")) != recorded["dataset"]:
            diffs.append(f"datasets.{recorded.get('name')}")
    m = method(step, recorded)
    if m and "params" in recorded:
        kind, name = m
        variant = (recorded.get("row", {}).get("defense_variant") if kind == "defense"
                   else _attack_variant(path, recorded))
        if variant is not None:
            try:
                want = _norm(resolved_params(current, kind, name, variant))
            except KeyError:
                want = None
            if want != recorded["params"]:
                diffs.append(f"{kind}s.{name} (variant {variant})")
    return diffs
