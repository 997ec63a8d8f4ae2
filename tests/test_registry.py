"""clipbd.registry and the attack / defense registries built on it."""
from __future__ import annotations

from pathlib import Path

import pytest

from clipbd import attacks, defenses
from clipbd.registry import Registry

DEFENSES = ["cbpt", "cleanclip", "coop", "fst", "ft", "linear_probe", "none", "rvpt", "vpt"]
ATTACKS = ["badclip", "badnet", "blended", "sig", "ssba", "trojvqa", "wanet"]
SRC = Path(__file__).resolve().parents[1] / "src" / "clipbd"


def test_attack_names():
    # the papers' methods are all there (a new module adds itself: no list to keep exact)
    names = attacks.REGISTRY.names()
    assert names == sorted(names) and set(ATTACKS) <= set(names)
    assert attacks.REGISTRY.kind == "attack"


def test_defense_names():
    names = defenses.REGISTRY.names()
    assert names == sorted(names) and set(DEFENSES) <= set(names)


@pytest.mark.parametrize("reg,name,cls_name,base", [
    (attacks.REGISTRY, "badnet", "BadNet", attacks.Attack),
    (defenses.REGISTRY, "none", "NoDefense", defenses.Defense),
    (defenses.REGISTRY, "linear_probe", "LinearProbe", defenses.Defense),
])
def test_get_known(reg, name, cls_name, base):
    cls = reg.get(name)
    assert cls.__name__ == cls_name
    assert issubclass(cls, base)
    assert cls.name == name


@pytest.mark.parametrize("reg,kind,known", [
    (attacks.REGISTRY, "attack", "badnet"),
    (defenses.REGISTRY, "defense", "linear_probe, none"),
])
def test_get_unknown_names_known(reg, kind, known):
    with pytest.raises(KeyError) as info:
        reg.get("nope")
    msg = info.value.args[0]
    assert msg.startswith(f"unknown {kind} 'nope'; known: ")
    assert known in msg


def test_register_twice_raises_on_fresh_registry():
    reg = Registry("widget", "clipbd.attacks", ())

    @reg.register("w")
    class A:
        pass

    assert A.name == "w"
    assert reg.register("w")(A) is A  # the same class again is fine
    with pytest.raises(ValueError, match="widget 'w' is registered twice"):
        @reg.register("w")
        class B:
            pass

    assert reg.get("w") is A
    assert reg.names() == ["w"]


def test_register_twice_on_real_registry_leaves_it_intact():
    before = defenses.REGISTRY.get("none")

    class Impostor(defenses.Defense):
        pass

    with pytest.raises(ValueError, match="defense 'none' is registered twice"):
        defenses.register("none")(Impostor)
    names = defenses.REGISTRY.names()
    assert defenses.REGISTRY.get("none") is before
    with pytest.raises(ValueError):
        defenses.register("none")(Impostor)
    assert defenses.REGISTRY.names() == names


def test_a_new_module_is_found_without_any_list(tmp_path, monkeypatch):
    # a package with a base module and one method module: the registry imports every module
    # of the package (but the skipped `base`) on first use, so dropping in a file is enough
    pkg = tmp_path / "widgets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from clipbd.registry import Registry\nREGISTRY = Registry('widget', 'widgets')\n")
    (pkg / "base.py").write_text("raise ImportError('base is never imported by the registry')\n")
    (pkg / "gear.py").write_text("from widgets import REGISTRY\n\n\n@REGISTRY.register('gear')\n"
                                 "class Gear:\n    order = 1\n")
    (pkg / "gear.schema.yaml").write_text("teeth: {type: integer, default: 12}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import widgets

    assert widgets.REGISTRY._loaded is False
    assert widgets.REGISTRY.names() == ["gear"]
    assert widgets.REGISTRY.schema("gear")["properties"] == {"teeth": {"type": "integer",
                                                                       "default": 12}}


@pytest.mark.parametrize("reg,name,rel", [
    (attacks.REGISTRY, "badnet", "attacks/badnet.py"),
    (defenses.REGISTRY, "none", "defenses/none.py"),
    (defenses.REGISTRY, "linear_probe", "defenses/linear_probe.py"),
])
def test_module_file(reg, name, rel):
    assert Path(reg.module_file(name)).resolve() == (SRC / rel).resolve()


def test_module_file_unknown():
    with pytest.raises(KeyError, match="unknown attack 'nope'"):
        attacks.REGISTRY.module_file("nope")


def test_factories():
    a = attacks.get("badnet", {"poison_rate": 0.01, "patch_size": 3, "location": "corner",
                               "fixed_pattern": True}, 32)
    assert type(a).__name__ == "BadNet"
    d = defenses.get("none", {})
    assert type(d).__name__ == "NoDefense"
