"""A tiny explicit registry: name -> class. Attacks and defenses register themselves."""
from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, modules: tuple[str, ...]):
        self.kind = kind
        self._package = package
        self._modules = modules  # imported lazily, once, so registration is explicit and cheap
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
            for mod in self._modules:
                importlib.import_module(f"{self._package}.{mod}")
            self._loaded = True

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> type[T]:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            ) from None

    def module_file(self, name: str) -> str:
        """Source file that implements `name` (for code fingerprints)."""
        import inspect

        return inspect.getfile(self.get(name))
