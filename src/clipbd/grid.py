"""Grid expansion: config `grid` blocks -> one row per evaluated model (grids are data).

A row's path segments spell out the grid: dataset / attack / attack variant / defense /
defense variant / shots / seed. The seed is the attack chain's too (see `expand`). A variant
is `default` or `key~value,key~value` (sorted).
Invalid combinations are filtered here, in one place.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass

from clipbd import paths
from clipbd.config import CLEAN

DEFAULT = "default"


def encode_variant(params: dict) -> str:
    if not params:
        return DEFAULT
    def text(v):
        return v if isinstance(v, str) else json.dumps(v)

    return ",".join(f"{k}~{text(params[k])}" for k in sorted(params))


def decode_variant(variant: str) -> dict:
    if variant == DEFAULT:
        return {}
    out = {}
    for part in variant.split(","):
        key, _, val = part.partition("~")
        try:  # numbers and booleans as JSON reads them ("1e-05" is a float), else a string
            out[key] = json.loads(val)
        except ValueError:
            out[key] = val
    return out


@dataclass(frozen=True)
class Run:
    dataset: str
    attack: str
    attack_variant: str
    defense: str
    defense_variant: str
    shots: int
    seed: int

    @property
    def key(self) -> str:
        """Its path segment under results/metrics, defenses, probes (`paths.RUN`)."""
        return paths.RUN.format(**asdict(self))

    def row(self, **extra) -> dict:
        """Its columns in metrics.csv: the coordinates, `extra`, its variants' parameters."""
        return {"dataset": self.dataset, "attack": self.attack, "defense": self.defense,
                "shots": self.shots, "seed": self.seed, "attack_variant": self.attack_variant,
                "defense_variant": self.defense_variant, **extra,
                **decode_variant(self.attack_variant), **decode_variant(self.defense_variant)}


def invalid(attack: str, defense: str) -> str:
    """Why `attack` x `defense` cannot be evaluated ("" when it can), from the classes' facts:
    a dual-key attack's text key cannot reach a defense that drops the text encoder."""
    from clipbd import attacks, defenses

    if attack == CLEAN:
        return ""
    atk, dfn = attacks.REGISTRY.get(attack), defenses.REGISTRY.get(defense)
    if atk.dual_key and not dfn.text_encoder:
        return (f"{dfn.title or defense} drops the text encoder, so the text key of "
                f"{atk.title or attack} is gone")
    return ""


# Options of every defense that trains, next to its own hyperparameters (grid `defense_params`):
# the few-shot set without the target class (RVPT Table 4), and tuning on another dataset than
# the one evaluated (RVPT Table 5; only for defenses whose delta does not depend on the classes).
TUNING = {"without_target_class": False, "tune_dataset": None}


def _trains(defense: str) -> bool:
    from clipbd import defenses

    return defenses.REGISTRY.get(defense).trains


def _transfers(defense: str) -> bool:
    from clipbd import defenses

    return defenses.REGISTRY.get(defense).transfers


def _product(params: dict) -> list[dict]:
    keys = sorted(params)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(params[k] for k in keys))]


def owns(cfg: dict, kind: str, name: str, key: str) -> bool:
    """Whether `key` is a hyperparameter of attack/defense `name` (grid overrides it)."""
    if name == CLEAN:
        return False
    if kind == "defense" and key in TUNING and _trains(name):
        return True
    return key in cfg[f"{kind}s"].get(name, {})


def _variants(cfg: dict, kind: str, name: str, grid_params: dict) -> list[str]:
    own = {k: v for k, v in grid_params.items() if owns(cfg, kind, name, k)}
    return [encode_variant(p) for p in _product(own)]


def backbone(cfg: dict, dataset: str) -> str | None:
    """Name under `models` of the backbone `dataset` is attacked on (None: top-level `model`)."""
    src = cfg["datasets"][dataset].get("backdoor_from") or dataset
    return cfg["datasets"][src].get("model")


def arch(cfg: dict, dataset: str) -> str:
    name = backbone(cfg, dataset)
    return cfg["models"][name]["arch"] if name else cfg["model"]["arch"]


def _valid(cfg: dict, run: "Run") -> bool:
    from clipbd import defenses

    if defenses.REGISTRY.get(run.defense).vit_only and "vit" not in arch(cfg, run.dataset).lower():
        return False
    tune = decode_variant(run.defense_variant).get("tune_dataset")
    return tune in (None, run.dataset) or _transfers(run.defense)


def expand(cfg: dict) -> list[Run]:
    """The grid's rows. A block's seeds are the whole chain's (trigger, poisoning, backdoor,
    few-shot draw, defense): an attacked model is evaluated once per seed, with or without a
    defense; the clean model (pre-trained with the global `seed`) untuned, once."""
    runs: dict[str, Run] = {}
    for block in cfg["grid"]:
        for dataset, attack, defense in itertools.product(
                block["datasets"], block["attacks"], block["defenses"]):
            if invalid(attack, defense):
                continue
            trains = _trains(defense)
            shots = block["shots"] if trains else [0]
            seeds = block["seeds"] if trains or attack != CLEAN else [cfg["seed"]]
            for attack_variant in _variants(cfg, "attack", attack, block["attack_params"]):
                for defense_variant in _variants(cfg, "defense", defense, block["defense_params"]):
                    for k, s in itertools.product(shots, seeds):
                        run = Run(dataset, attack, attack_variant, defense, defense_variant, k, s)
                        if _valid(cfg, run):
                            runs[run.key] = run
    return list(runs.values())


def real_trigger(attack: str, defense_params: dict) -> bool:
    """Whether a run's defense is handed the attack's real trigger (CBPT's `oracle_trigger`
    ablation): its `defend` job then reads the stored trigger and the attack's code."""
    return bool(defense_params.get("oracle_trigger")) and attack != CLEAN


def resolved_params(cfg: dict, kind: str, name: str, variant: str) -> dict:
    """The config block of one attack/defense with a variant's overrides applied."""
    if name == CLEAN:
        return {}
    tuning = TUNING if kind == "defense" and _trains(name) else {}
    return {**tuning, **cfg[f"{kind}s"].get(name, {}), **decode_variant(variant)}
