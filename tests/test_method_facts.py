"""Contract tests over every registered attack and defense: the facts the pipeline reads are
on the classes, and every consumer (schema, grid, config checks, probe, paper tables,
fingerprints, docs) takes them from there, so a new method needs no list edited."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from clipbd import attacks, config, defenses, fingerprint
from clipbd.report import paper

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = set(re.findall(r"^## (.+)$", (ROOT / "docs" / "methods.md").read_text(), flags=re.M))
METHODS = [("attack", n) for n in attacks.REGISTRY.names()] + \
          [("defense", n) for n in defenses.REGISTRY.names()]
REGISTRIES = {"attack": attacks.REGISTRY, "defense": defenses.REGISTRY}


@pytest.mark.parametrize("kind,name", METHODS)
def test_every_method_has_a_title_a_section_and_a_schema(kind, name):
    cls = REGISTRIES[kind].get(name)
    assert cls.name == name and cls.title
    section = cls.section or f"{kind.capitalize()}: {cls.title}"
    assert section in SECTIONS, f"docs/methods.md has no section '## {section}'"
    block = config.schema()["properties"][f"{kind}s"]["properties"][name]
    assert block["additionalProperties"] is False and block["default"] == {}
    assert all("default" in p and p.get("description") for p in block["properties"].values())
    file = fingerprint.method_file(kind, name)
    assert (fingerprint.PKG / file).is_file() and file.startswith(f"{kind}s/")


@pytest.mark.parametrize("kind,name", METHODS)
def test_every_method_is_in_the_paper_tables(kind, name):
    titles = paper.ATTACK if kind == "attack" else paper.DEFENSE
    assert titles[name] == REGISTRIES[kind].get(name).title


def test_table_order_is_the_classes_order():
    # the papers' methods in the papers' order; a method without an `order` comes after them
    attacks_ = ["badnet", "blended", "sig", "ssba", "wanet", "trojvqa", "badclip"]
    defenses_ = ["none", "cleanclip", "linear_probe", "rvpt", "vpt", "coop", "cbpt", "ft", "fst"]
    assert list(paper.ATTACK)[:len(attacks_)] == attacks_
    assert list(paper.DEFENSE)[:len(defenses_)] == defenses_


@pytest.mark.parametrize("name", defenses.REGISTRY.names())
def test_prompt_parameters_named_on_a_class_are_in_its_schema(name):
    cls = defenses.REGISTRY.get(name)
    props = config.schema()["properties"]["defenses"]["properties"][name]["properties"]
    for param in filter(None, (cls.prompt_depth, cls.text_context)):
        assert props[param]["type"] == "integer"


def test_facts_read_by_the_grid_checks_and_probe():
    known = ["none", "cleanclip", "linear_probe", "rvpt", "vpt", "coop", "cbpt", "ft", "fst"]
    facts = {n: defenses.REGISTRY.get(n) for n in known}
    assert [n for n, c in facts.items() if c.vit_only] == ["rvpt", "vpt"]
    assert [n for n, c in facts.items() if c.prompt_depth] == ["rvpt", "vpt"]
    assert [n for n, c in facts.items() if c.text_context] == ["coop", "cbpt"]
    assert [n for n, c in facts.items() if c.probe] == ["none", "rvpt", "vpt"]
    assert [n for n, c in facts.items() if not c.text_encoder] == ["linear_probe", "fst"]
    assert [n for n in ("badnet", "blended", "sig", "ssba", "wanet", "trojvqa", "badclip")
            if attacks.REGISTRY.get(n).dual_key] == ["trojvqa"]


def test_an_unknown_hyperparameter_names_the_method_block():
    cfg = config.load(ROOT / "config" / "config.yaml")
    cfg["attacks"]["sig"] = {"amplitude": 0.1, "ampltude": 0.2}
    with pytest.raises(config.ConfigError, match=r"config key `attacks\.sig\.ampltude`"):
        config.resolve(cfg)
