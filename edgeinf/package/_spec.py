"""A tiny declarative checker for JSON values: the building blocks of the manifest schema.

Each spec is a small object with ``check(value, where)`` that raises :class:`SpecError`
naming the first problem (``where`` is a JSON path such as ``artifacts[3].bits``). Specs
only read plain JSON values (dict, list, str, int, float, bool, None), so they never crash
on hostile input. Standard library only (the device side loads packages).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

MAX_STR = 4096
MAX_LIST = 1 << 20
MAX_INT = 1 << 63


class SpecError(ValueError):
    """A value does not match its spec; the message names where and why."""


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class Spec:
    """Base: ``check`` raises SpecError; ``optional`` fields may be absent."""

    def check(self, value: Any, where: str) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Any_(Spec):
    """Any JSON value (the parser's limits on depth, size and numbers still hold)."""

    def check(self, value: Any, where: str) -> None:
        return None


@dataclass(frozen=True)
class Str(Spec):
    max_len: int = MAX_STR
    choices: Sequence[str] | None = None
    pattern: str | None = None

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise SpecError(f"{where} must be a string, got {type_name(value)}")
        if len(value) > self.max_len:
            raise SpecError(f"{where} is longer than {self.max_len} characters")
        if self.choices is not None and value not in self.choices:
            raise SpecError(f"{where} {value[:40]!r} is not one of {', '.join(self.choices)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise SpecError(f"{where} {value[:40]!r} has characters or a form that is not allowed")


@dataclass(frozen=True)
class Int(Spec):
    lo: int = -MAX_INT
    hi: int = MAX_INT

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SpecError(f"{where} must be an integer, got {type_name(value)}")
        if not self.lo <= value <= self.hi:
            raise SpecError(f"{where} is outside {self.lo}..{self.hi}")


@dataclass(frozen=True)
class Num(Spec):
    """A finite real number (int or float, not bool) in ``[lo, hi]``."""

    lo: float = -1e300
    hi: float = 1e300

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SpecError(f"{where} must be a number, got {type_name(value)}")
        if isinstance(value, int) and abs(value) > MAX_INT:
            raise SpecError(f"{where} is too large")
        if not math.isfinite(value) or not self.lo <= value <= self.hi:
            raise SpecError(f"{where} is outside {self.lo:g}..{self.hi:g}")


@dataclass(frozen=True)
class Bool(Spec):
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, bool):
            raise SpecError(f"{where} must be true or false, got {type_name(value)}")


@dataclass(frozen=True)
class Null(Spec):
    def check(self, value: Any, where: str) -> None:
        if value is not None:
            raise SpecError(f"{where} must be null, got {type_name(value)}")


@dataclass(frozen=True)
class OneOf(Spec):
    options: tuple[Spec, ...]

    def check(self, value: Any, where: str) -> None:
        errors = []
        for spec in self.options:
            try:
                spec.check(value, where)
                return
            except SpecError as exc:
                errors.append(str(exc))
        raise SpecError(" or ".join(dict.fromkeys(errors)))


@dataclass(frozen=True)
class List(Spec):
    item: Spec = field(default_factory=Any_)
    max_len: int = MAX_LIST
    min_len: int = 0

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise SpecError(f"{where} must be a list, got {type_name(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            raise SpecError(f"{where} must have {self.min_len}..{self.max_len} entries, has {len(value)}")
        for i, v in enumerate(value):
            self.item.check(v, f"{where}[{i}]")


@dataclass(frozen=True)
class Obj(Spec):
    """An object with known ``fields`` (name -> spec); ``required`` names must be present.
    Other keys are allowed (``extra`` checks their values) unless ``extra`` is None."""

    fields: Mapping[str, Spec] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    extra: Spec | None = field(default_factory=Any_)
    max_keys: int = 4096

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SpecError(f"{where} must be an object, got {type_name(value)}")
        if len(value) > self.max_keys:
            raise SpecError(f"{where} has more than {self.max_keys} keys")
        for name in self.required:
            if name not in value:
                raise SpecError(f"{where} has no '{name}'")
        for name, v in value.items():
            spec = self.fields.get(name, self.extra)
            if spec is None:
                raise SpecError(f"{where} has an unknown key {name[:40]!r}")
            spec.check(v, f"{where}.{name}")


@dataclass(frozen=True)
class Map(Spec):
    """An object used as a map: every key matches ``key``, every value ``value``."""

    value: Spec
    key: Spec = field(default_factory=lambda: Str(max_len=256))
    max_keys: int = 1 << 16

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SpecError(f"{where} must be an object, got {type_name(value)}")
        if len(value) > self.max_keys:
            raise SpecError(f"{where} has more than {self.max_keys} keys")
        for k, v in value.items():
            self.key.check(k, f"{where} key")
            self.value.check(v, f"{where}.{k[:40]}")
