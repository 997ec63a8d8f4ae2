"""Resolve and check the optional `supervised` block (called by clipbd.config.resolve).

Attack blocks: the CLIP track's hyperparameters of the same trigger (schema `attacks.<name>`,
defaults filled, `poison_rate` excluded: the grid's `poison_rates` set it) plus the track's
own keys (EXTRA); `lc` is defined in the `supervised` schema. Defense blocks: the shared
`tune` hyperparameters overridden per defense. Every error names the key.
"""
from __future__ import annotations

import copy

import jsonschema

from clipbd.config import ConfigError, _fill_defaults, _key, schema
from clipbd.data import CAPTION_KINDS
from clipbd.supervised import attacks

EXTRA = {"wanet": {"cross_ratio": {"type": "number", "minimum": 0, "default": 2.0,
                                   "description": "WaNet noise-mode cross images per poisoned "
                                                  "image (BackdoorBench cross_ratio 2)."}}}
TUNE_KEYS = ("lr", "epochs", "batch_size", "momentum", "weight_decay", "augment", "project_norm")


def attack_schema(name: str) -> dict:
    root = schema()["properties"]
    if name in attacks.SHARED:
        sub = copy.deepcopy(root["attacks"]["properties"][name])
        sub["properties"].pop("poison_rate", None)
        sub["properties"].update(EXTRA.get(name, {}))
        return sub
    return root["supervised"]["properties"]["attacks"]["properties"][name]


def _validate(instance, sch: dict, prefix: str):
    instance = copy.deepcopy(instance)
    _fill_defaults(instance, sch)
    for err in jsonschema.Draft202012Validator(sch).iter_errors(instance):
        path = list(err.absolute_path)
        if err.validator == "additionalProperties":
            path.append(sorted(k for k in err.instance if k not in err.schema.get(
                "properties", {}))[0])
        raise ConfigError(f"config key `{prefix}{'.' + _key(path) if path else ''}`: "
                          f"{err.message}; see config/README.md (supervised track)")
    return instance


def resolve(cfg: dict) -> None:
    """Fill `cfg["supervised"]` in place: attack and defense blocks of every grid entry."""
    from clipbd.supervised import defenses

    sup = cfg["supervised"]
    for b, block in enumerate(sup["grid"]):
        where = f"supervised.grid[{b}]"
        for i, name in enumerate(block["datasets"]):
            ds = cfg["datasets"].get(name)
            if ds is None or ds["kind"] in CAPTION_KINDS:
                raise ConfigError(f"config key `{where}.datasets[{i}]`: {name!r} is not a "
                                  "labelled dataset under `datasets`; defined: "
                                  + ", ".join(cfg["datasets"]))
        for i, name in enumerate(block["attacks"]):
            if name not in attacks.NAMES:
                raise ConfigError(f"config key `{where}.attacks[{i}]`: unknown supervised "
                                  f"attack {name!r}; known: {', '.join(attacks.NAMES)}")
            sup["attacks"].setdefault(name, {})
        known = defenses.REGISTRY.names()
        for i, name in enumerate(block["defenses"]):
            if name not in known:
                raise ConfigError(f"config key `{where}.defenses[{i}]`: unknown supervised "
                                  f"defense {name!r}; known: {', '.join(known)}")
        for key in block["defense_params"]:
            if key not in (*TUNE_KEYS, "alpha"):
                raise ConfigError(f"config key `{where}.defense_params.{key}`: not a tuning "
                                  f"hyperparameter; use one of: alpha, {', '.join(TUNE_KEYS)}")
    for name in list(sup["attacks"]):
        if name not in attacks.NAMES:
            raise ConfigError(f"config key `supervised.attacks.{name}`: unknown supervised "
                              f"attack; known: {', '.join(attacks.NAMES)}")
        sup["attacks"][name] = _validate(sup["attacks"][name] or {}, attack_schema(name),
                                         f"supervised.attacks.{name}")


def defense_params(sup: dict, defense: str, overrides: dict) -> dict:
    """A defense's hyperparameters: `tune`, then `defenses.<name>`, then the grid's variant."""
    from clipbd.supervised.defenses import REGISTRY

    alpha = REGISTRY.get(defense).uses_alpha  # FST's feature-shift weight
    own = {k: v for k, v in overrides.items() if k != "alpha" or alpha}
    params = {**sup["tune"], **sup["defenses"].get(defense, {}), **own}
    if not alpha:
        params.pop("alpha", None)
    return params
