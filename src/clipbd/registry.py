"""A tiny explicit registry: name -> class. Attacks and defenses register themselves.

Every module of the package (but `base`) is imported once, on first use, so a new method is
one module with a `@register("name")` class: no list to extend. Everything the pipeline needs
to know about a method (its title, what it supports, its config schema) is on its class.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, skip: tuple[str, ...] = ("base",)):
        self.kind = kind
        self._package = package
        self._skip = skip
        self._entries: dict[str, type[T]] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            if name in self._entries and self._entries[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            cls.name = name
            self._entries[name] = cls
            return cls

        return deco

    def _load(self) -> None:
        if not self._loaded:
            pkg = importlib.import_module(self._package)
            for mod in sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)):
                if mod not in self._skip:
                    importlib.import_module(f"{self._package}.{mod}")
            self._loaded = True

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def ordered(self) -> list[str]:
        """Names in the papers' table order (the classes' `order`; then by name)."""
        self._load()
        return sorted(self._entries, key=lambda n: (getattr(self._entries[n], "order", 100), n))

    def classes(self) -> dict[str, type[T]]:
        self._load()
        return {n: self._entries[n] for n in self.ordered()}

    def get(self, name: str) -> type[T]:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            ) from None

    def schema(self, name: str) -> dict:
        """The config block of `name` as a JSON schema: its hyperparameters are read from the
        `<module>.schema.yaml` beside its module (none: a method without hyperparameters)."""
        from pathlib import Path

        import yaml

        path = Path(self.module_file(name)).with_suffix(".schema.yaml")
        props = yaml.safe_load(path.read_text()) if path.is_file() else None
        return {"type": "object", "additionalProperties": False, "default": {},
                "properties": props or {}}

    def module_file(self, name: str) -> str:
        """Source file that implements `name` (for code fingerprints)."""
        import inspect

        return inspect.getfile(self.get(name))
