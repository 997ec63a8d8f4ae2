"""Config: JSON-schema validation with defaults, then the checks a schema cannot express.

Every error names the config key and the fix, and is raised before any job starts.
"""
from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from clipbd.data import dataset_classes

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
CLEAN = "clean"


class ConfigError(ValueError):
    pass


def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _fill_defaults(instance, sch: dict) -> None:
    if isinstance(instance, dict):
        for key, sub in sch.get("properties", {}).items():
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                _fill_defaults(instance[key], sub)
        extra = sch.get("additionalProperties")
        if isinstance(extra, dict):
            for key, val in instance.items():
                if key not in sch.get("properties", {}):
                    _fill_defaults(val, extra)
    elif isinstance(instance, list) and isinstance(sch.get("items"), dict):
        for item in instance:
            _fill_defaults(item, sch["items"])


def _key(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def validate_schema(cfg: dict) -> dict:
    """Return a copy of `cfg` with defaults filled; raise ConfigError on the first violation."""
    cfg = copy.deepcopy(cfg)
    sch = schema()
    _fill_defaults(cfg, sch)
    errors = sorted(jsonschema.Draft202012Validator(sch).iter_errors(cfg),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        path = list(err.absolute_path)
        if err.validator == "additionalProperties":
            known = err.schema.get("properties", {})
            path.append(sorted(k for k in err.instance if k not in known)[0])
            hint = "remove it or fix its spelling (see config/README.md)"
        elif err.validator == "required":
            hint = "add it (see config/README.md)"
        else:
            hint = f"expected {err.validator} {err.validator_value!r}"
        raise ConfigError(f"config key `{_key(path)}`: {err.message}; {hint}")
    return cfg


def check(cfg: dict) -> None:
    """Cross-key checks: registry names, dataset references, targets, files on disk."""
    from clipbd import attacks, defenses

    datasets = cfg["datasets"]
    for name, ds in datasets.items():
        classes = dataset_classes(ds)
        if ds["target"] not in classes:
            raise ConfigError(f"config key `datasets.{name}.target`: {ds['target']!r} is not a "
                              f"class of {name}; choose one of: {', '.join(classes)}")
        if ds["kind"] == "fashion_mnist" and not cfg["plan_only"]:
            from clipbd.data.fashion_mnist import DEBIAN_ROOT, check_root

            ds.setdefault("path", DEBIAN_ROOT)
            try:
                check_root(ds["path"], f"datasets.{name}.path")
            except FileNotFoundError as err:
                raise ConfigError(str(err)) from None
        if ds["kind"] == "synthetic":
            for key in ("n_train", "n_test"):
                if key not in ds:
                    raise ConfigError(f"config key `datasets.{name}.{key}`: required for "
                                      "synthetic datasets; set a number of images")
    for stage in ("pretrain", "backdoor"):
        for i, name in enumerate(cfg[stage]["datasets"]):
            if name not in datasets:
                raise ConfigError(f"config key `{stage}.datasets[{i}]`: unknown dataset {name!r}; "
                                  f"defined: {', '.join(datasets)}")
    model = cfg["model"]
    if model["weights"]:
        if not model["sha256"]:
            raise ConfigError("config key `model.sha256`: required when model.weights is set; "
                              "put the file's sha256sum there")
        if not cfg["plan_only"] and not Path(model["weights"]).is_file():
            raise ConfigError(f"config key `model.weights`: file {model['weights']} not found; "
                              "point it at a local open_clip safetensors file")
    known_attacks = attacks.REGISTRY.names()
    known_defenses = defenses.REGISTRY.names()
    for b, block in enumerate(cfg["grid"]):
        for i, name in enumerate(block["datasets"]):
            if name not in datasets:
                raise ConfigError(f"config key `grid[{b}].datasets[{i}]`: unknown dataset {name!r}; "
                                  f"defined under `datasets`: {', '.join(datasets)}")
        for i, name in enumerate(block["attacks"]):
            if name != CLEAN and name not in known_attacks:
                raise ConfigError(f"config key `grid[{b}].attacks[{i}]`: unknown attack {name!r}; "
                                  f"known: {CLEAN}, {', '.join(known_attacks)}")
        for i, name in enumerate(block["defenses"]):
            if name not in known_defenses:
                raise ConfigError(f"config key `grid[{b}].defenses[{i}]`: unknown defense "
                                  f"{name!r}; known: {', '.join(known_defenses)}")
        _check_overrides(cfg, b, block, "attack", block["attacks"])
        _check_overrides(cfg, b, block, "defense", block["defenses"])


def _check_overrides(cfg, b, block, kind, names) -> None:
    from clipbd.grid import owns

    for key, values in block[f"{kind}_params"].items():
        if not any(owns(cfg, kind, n, key) for n in names):
            raise ConfigError(f"config key `grid[{b}].{kind}_params.{key}`: no {kind} of this "
                              f"block has a hyperparameter {key!r}; see `{kind}s` in the config")
        if key == "tune_dataset":
            for i, name in enumerate(values):
                if name is not None and name not in cfg["datasets"]:
                    raise ConfigError(f"config key `grid[{b}].defense_params.tune_dataset[{i}]`: "
                                      f"unknown dataset {name!r}; defined: {', '.join(cfg['datasets'])}")


def resolve(cfg: dict) -> dict:
    """Validate, fill defaults and check. The one entry point for the Snakefile and the CLI."""
    cfg = validate_schema(cfg)
    everything = list(cfg["datasets"])
    for stage in ("pretrain", "backdoor"):
        if not cfg[stage]["datasets"]:
            cfg[stage]["datasets"] = everything
    for kind, names in (("attacks", "attacks"), ("defenses", "defenses")):
        for block in cfg["grid"]:
            for name in block[names]:
                if name != CLEAN:
                    cfg[kind].setdefault(name, {})
    cfg = validate_schema(cfg)  # fill the blocks just added
    check(cfg)
    return cfg


def job_environment() -> None:
    """Jobs inherit this: the interpreter running snakemake first on PATH; no hub access."""
    import os
    import sys

    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load(path: str | Path, overrides: dict | None = None) -> dict:
    cfg = yaml.safe_load(Path(path).read_text())
    cfg.update(overrides or {})
    return resolve(cfg)
