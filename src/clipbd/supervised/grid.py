"""The supervised grid: config blocks -> runs, paths and each job's resolved config.

A run is dataset / attack / rate~r / defense / variant / seed~s; the variant spells out the
grid's `defense_params` a defense takes (alpha only where it `uses_alpha`: FST), e.g. `alpha~0.1`.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

from clipbd.grid import decode_variant, encode_variant
from clipbd.supervised.config import defense_params
from clipbd.supervised.defenses import REGISTRY

RESULTS = "results/supervised"
VICTIM = RESULTS + "/victims/{dataset}/{attack}/rate~{rate}/seed~{seed}/model.safetensors"
TRIGGER = RESULTS + "/triggers/{dataset}/{attack}/trigger.safetensors"
RUN = "{dataset}/{attack}/rate~{rate}/{defense}/{defense_variant}/seed~{seed}"
METRICS = RESULTS + "/metrics/" + RUN + "/metrics.json"
DELTA = RESULTS + "/defenses/" + RUN + "/delta.safetensors"
REPORT = {"csv": RESULTS + "/tables/fst.csv", "markdown": RESULTS + "/tables/fst.md",
          "rate_png": RESULTS + "/figures/fst_rate.png", "rate_pdf": RESULTS + "/figures/fst_rate.pdf",
          "alpha_png": RESULTS + "/figures/fst_alpha.png", "alpha_pdf": RESULTS + "/figures/fst_alpha.pdf"}


def rate_text(rate: float) -> str:
    return json.dumps(float(rate))


@dataclass(frozen=True)
class SupRun:
    dataset: str
    attack: str
    rate: str
    defense: str
    defense_variant: str
    seed: int

    def path(self, pattern: str) -> str:
        return pattern.format(**self.__dict__)


def expand(cfg: dict) -> list[SupRun]:
    runs: dict[SupRun, None] = {}
    for block in cfg["supervised"]["grid"]:
        for ds, atk, rate, dfn, seed in itertools.product(
                block["datasets"], block["attacks"], block["poison_rates"], block["defenses"],
                block["seeds"]):
            alpha = REGISTRY.get(dfn).uses_alpha  # the class's fact, not a name
            own = {k: v for k, v in block["defense_params"].items()
                   if dfn != "none" and (k != "alpha" or alpha)}
            if alpha and "alpha" not in own:
                own["alpha"] = [defense_params(cfg["supervised"], dfn, {})["alpha"]]
            keys = sorted(own)
            for vals in itertools.product(*(own[k] for k in keys)):
                defense_variant = encode_variant(dict(zip(keys, vals)))
                runs[SupRun(ds, atk, rate_text(rate), dfn, defense_variant, seed)] = None
    return list(runs)


def _base(cfg: dict, dataset: str, attack: str, seed: int) -> dict:
    sup = cfg["supervised"]
    return {"dataset": dataset, "target": cfg["datasets"][dataset]["target"],
            "image_size": cfg["image_size"], "seed": int(seed), "attack": attack,
            "params": sup["attacks"][attack], "victim": sup["victim"],
            "eval_batch_size": cfg["eval_batch_size"]}


def trigger_cfg(cfg: dict, dataset: str, attack: str) -> dict:
    base = _base(cfg, dataset, attack, cfg["seed"])
    return {k: base[k] for k in ("dataset", "target", "image_size", "seed", "attack", "params")}


def train_cfg(cfg: dict, dataset: str, attack: str, rate: str, seed: str) -> dict:
    row = {"dataset": dataset, "attack": attack, "poison_rate": float(rate), "defense": "none",
           "alpha": None, "seed": int(seed), "defense_variant": "default"}
    return {**_base(cfg, dataset, attack, seed), "poison_rate": float(rate), "row": row}


def defend_cfg(cfg: dict, dataset: str, attack: str, rate: str, defense: str, defense_variant: str,
               seed: str) -> dict:
    sup = cfg["supervised"]
    params = defense_params(sup, defense, decode_variant(defense_variant))
    out = train_cfg(cfg, dataset, attack, rate, seed)
    out["row"].update(defense=defense, alpha=params.get("alpha"), defense_variant=defense_variant)
    return {**out, "defense": defense, "defense_params": params,
            "tune_fraction": sup["tune_fraction"]}


def main_alpha(cfg: dict) -> float:
    return float(defense_params(cfg["supervised"], "fst", {})["alpha"])


def code(stage: str, attack: str = "", defense: str = "") -> str:
    """The code fingerprint of a supervised job: its verb (`sup-<stage>`), its attack's and its
    defense's files, each with what it imports (clipbd.fingerprint)."""
    from pathlib import Path

    from clipbd import fingerprint as fp
    from clipbd.supervised import attacks

    files = []
    if attack:
        files.append(str(Path(attacks.source_file(attack)).resolve().relative_to(fp.PKG)))
    if defense:
        files.append(str(Path(REGISTRY.module_file(defense)).resolve().relative_to(fp.PKG)))
    return fp.fingerprint(f"sup_{stage}", *sorted(fp.closure(*files)))
