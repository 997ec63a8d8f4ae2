"""Config: JSON-schema validation with defaults, then the checks a schema cannot express.

Every error names the config key and the fix, and is raised before any job starts.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jsonschema
import yaml


# package data (a wheel install has no workflow/ folder); workflow/schemas/ links to it
SCHEMA = resources.files("clipbd") / "schemas" / "config.schema.yaml"
CLEAN = "clean"


class ConfigError(ValueError):
    pass


@lru_cache(maxsize=1)
def _schema() -> dict:
    from clipbd import attacks, defenses

    sch = yaml.safe_load(SCHEMA.read_text())
    for kind, reg in (("attacks", attacks.REGISTRY), ("defenses", defenses.REGISTRY)):
        sch["properties"][kind]["properties"] = {n: reg.schema(n) for n in reg.ordered()}
    return sch


def schema() -> dict:
    """The config's JSON schema: config.schema.yaml plus every registered method's block."""
    return copy.deepcopy(_schema())


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
    from clipbd.config_checks import check_backbones, check_paths, known_classes

    datasets = cfg["datasets"]
    for name, ds in datasets.items():
        if ds["kind"] == "fashion_mnist":
            from clipbd.data.fashion_mnist import DEBIAN_ROOT

            ds.setdefault("path", DEBIAN_ROOT)
        classes = known_classes(name, ds, cfg["plan_only"])
        if classes is not None and ds["target"] not in classes:
            raise ConfigError(f"config key `datasets.{name}.target`: {ds['target']!r} is not a "
                              f"class of {name}; choose one of: {', '.join(classes)}")
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
        for name in block["defenses"]:
            if CLEAN in block["attacks"] and cfg["defenses"].get(name, {}).get("oracle_trigger"):
                raise ConfigError(f"config key `defenses.{name}.oracle_trigger`: attack {CLEAN!r} "
                                  f"of grid[{b}] has no trigger to give it; set it per block "
                                  "(grid `defense_params`) or leave clean out of that block")
    check_backbones(cfg)
    check_paths(cfg)


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
    """Validate, fill defaults and check. The one entry point for the Snakefile and the CLI.

    Overrides first: `defenses__rvpt__lr=0.1` path keys and strings typed by the schema
    (`snakemake --config` hands nested values over as strings; clipbd.config_overrides)."""
    from clipbd.config_overrides import apply as apply_overrides

    cfg = validate_schema(cli_booleans(apply_overrides(cfg, schema())))
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
    from clipbd.config_checks import check_models

    check_models(cfg)  # architectures, weight sha256, prompt depth and length vs the model
    if "supervised" in cfg:  # the optional supervised track (FST's protocol)
        from clipbd.supervised.config import resolve as resolve_supervised

        resolve_supervised(cfg)
    return cfg


def job_environment() -> None:
    """Jobs inherit this: the interpreter running snakemake first on PATH, this checkout's
    src/ first on PYTHONPATH (a conda env, `--sdm conda`, holds only the dependencies: its
    `python -m clipbd` runs the code this workflow runs); no hub access."""
    import os
    import sys

    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    src = Path(__file__).resolve().parents[1]
    if (src.parent / "pyproject.toml").is_file():  # a checkout, not an installed copy
        rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                if p and p != str(src)]
        os.environ["PYTHONPATH"] = os.pathsep.join([str(src), *rest])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # OpenMP threads that wait by sleeping, not spinning: with another process on the cores, a
    # 2-thread training step took 4.4 s spinning and 0.63 s sleeping (1 thread: 0.75 s).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # glibc serves allocations over 32 MB with fresh mmap'd pages and hands freed heap back,
    # so every batch of an evaluation page-faulted its activations in again: 13 of an RVPT
    # evaluation's 36 s were kernel time. Keeping freed memory for reuse: 24 s, 0.9 s in the
    # kernel, peak RSS 0.74 -> 1.19 GB (training steps: unchanged).
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(4 << 30))
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(4 << 30))


def load(path: str | Path, overrides: dict | None = None) -> dict:
    """One config file (its `extends` chain under it) + overrides, resolved (`clipbd audit`)."""
    return resolve(study([path], overrides))


# ---- which files make up a study: the Snakefile, `clipbd audit`, scripts and tests ----

DEFAULT = Path("config") / "config.yaml"  # the embedded study, relative to the working directory


def study(configfiles, overrides: dict | None = None, default: str | Path = DEFAULT) -> dict:
    """The raw config of a run: the `--configfile` files in order, each with the file it
    `extends` under it, or `default` when none is given; then the `--config` overrides.

    A file stands on its own: nothing of the default study leaks into it unless it says
    `extends: config.yaml` (a path relative to the file). Dicts merge key by key, any other
    value replaces (as snakemake merges several --configfile files)."""
    files = [Path(f) for f in configfiles] or [Path(default)]
    if not configfiles and not files[0].is_file():
        raise ConfigError(f"no config: {files[0]} not found; run from the repository root "
                          "(the embedded study) or pass --configfile")
    cfg: dict = {}
    for path in files:
        cfg = merged(cfg, read_file(path))
    return merged(cfg, overrides or {})


def read_file(path: str | Path, _chain: tuple = ()) -> dict:
    """A config file with what it `extends` (recursively) merged under it."""
    path = Path(path).resolve()
    if path in _chain:
        raise ConfigError(f"config key `extends` in {_chain[-1]}: {path} extends itself through "
                          + " -> ".join(map(str, (*_chain, path))) + "; break the cycle")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        where = f" (extended by {_chain[-1]})" if _chain else ""
        raise ConfigError(f"config file {path}{where}: cannot read it: {err}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"config file {path}: expected a mapping of config keys at the top")
    base = cfg.pop("extends", None)
    if base is None:
        return cfg
    if not isinstance(base, str):
        raise ConfigError(f"config key `extends` in {path}: expected the path of one config "
                          "file (relative to this one), e.g. `extends: config.yaml`")
    return merged(read_file(path.parent / base, (*_chain, path)), cfg)


def merged(base: dict, over: dict) -> dict:
    """`over` merged onto a copy of `base`: dicts key by key, every other value replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
    return out


def cli_booleans(cfg: dict) -> dict:
    """`snakemake --config plan_only=true` passes the string 'true': read top-level booleans."""
    words = {"true": True, "false": False}
    strings = {k for k, v in cfg.items() if isinstance(v, str) and v.lower() in words}
    if not strings:
        return cfg
    props = schema()["properties"]
    return {k: words[v.lower()] if k in strings and props.get(k, {}).get("type") == "boolean"
            else v for k, v in cfg.items()}


STUDY_OUT = "CLIPBD_STUDY_OUT"  # scripts/dvc_*.sh set it for their dry run


def write_study(cfg: dict) -> None:
    """The resolved study to the JSON file $CLIPBD_STUDY_OUT names, if set: dvc.yaml's params
    (results/study.json), written from the very config the workflow runs with."""
    import os

    path = os.environ.get(STUDY_OUT)
    if path:
        from clipbd.artifacts import write_json

        write_json(path, cfg)
