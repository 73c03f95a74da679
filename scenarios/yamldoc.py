"""YAML documents that remember where every key came from, and strict validation.

A document keeps the composed node tree beside the data so that a validation error's
key path can be turned back into a line number. Overrides (a scenario's
``overrides:``, the command line's ``--set``, sweep points) are applied to the data
before validation and remember their own origin, so an error caused by an override
points at the override.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import InputError, Problem, did_you_mean, format_path

Loc = tuple[str | int, ...]


class YamlDoc:
    """A parsed YAML mapping and its node tree."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        try:
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            reason = getattr(exc, "problem", None) or str(exc)
            raise InputError([Problem(source, line, "", f"invalid YAML: {reason}")]) from None
        if not isinstance(self.data, dict):
            raise InputError([Problem(source, 1, "", "the file must be a YAML mapping of keys")])
        duplicates = list(_duplicate_keys(self.root, ()))
        if duplicates:
            raise InputError(
                [Problem(source, ln, format_path(loc), "duplicate key") for loc, ln in duplicates]
            )

    @classmethod
    def read(cls, path: Path) -> YamlDoc:
        try:
            text = path.read_text()
        except OSError as exc:
            problem = Problem(str(path), None, "", f"cannot read: {exc.strerror}")
            raise InputError([problem]) from None
        return cls(str(path), text)

    def line_of(self, loc: Loc) -> int | None:
        """The line of the deepest node on ``loc`` that exists in the file."""
        node: yaml.Node | None = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            node = _child(node, part)
            if node is None:
                break
            line = node.start_mark.line + 1
        return line

    def key_line(self, loc: Loc) -> int | None:
        """The line of the key itself (for unknown keys), else of the deepest node."""
        parent = self.root
        for part in loc[:-1]:
            parent = _child(parent, part)
        if isinstance(parent, yaml.MappingNode):
            for key, _ in parent.value:
                if key.value == str(loc[-1]):
                    return key.start_mark.line + 1
        return self.line_of(loc)


def _child(node: yaml.Node | None, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                return value
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        items = node.value
        return items[part] if 0 <= part < len(items) else None
    return None


def _duplicate_keys(node: yaml.Node, loc: Loc) -> typing.Iterator[tuple[Loc, int]]:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                yield (*loc, key.value), key.start_mark.line + 1
            seen.add(key.value)
            yield from _duplicate_keys(value, (*loc, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, i))


# --- overrides ------------------------------------------------------------------------
@dataclass(frozen=True)
class Override:
    """A value put at a dotted key path, and where that instruction came from."""

    path: str  # dotted, e.g. "iommu.iotlb.entries" or "cpus.1.start"
    value: Any
    source: str  # file name or "--set"
    line: int | None
    shown: str  # how to name it in a message, e.g. "overrides.iommu.iotlb.entries"

    def problem(self, message: str) -> Problem:
        return Problem(self.source, self.line, self.shown, message)


def parse_set(text: str) -> Override:
    """``--set KEY=VALUE``; the value is read as a YAML scalar."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise InputError([Problem("--set", None, "", f"expected KEY=VALUE, got {text!r}")])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return Override(key.strip(), value, "--set", None, text)


def apply_override(data: dict[str, Any], ov: Override) -> Loc:
    """Put ``ov.value`` at its path in ``data`` (creating mappings); returns the loc."""
    parts = ov.path.split(".")
    node: Any = data
    loc: list[str | int] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise InputError([ov.problem(f"no list item {part!r} at {format_path(loc)}")])
            key: str | int = int(part)
        elif isinstance(node, dict):
            n = _dotted_key(node, tuple(loc), parts[i:])
            key = ".".join(parts[i : i + n]) if n > 1 else _dict_key(node, part)
            i += n - 1
        else:
            raise InputError([ov.problem(f"{format_path(loc)} is not a mapping")])
        i += 1
        last = i == len(parts)
        loc.append(key)
        if last:
            node[key] = ov.value
        else:
            if isinstance(node, dict) and node.get(key) is None:
                if parts[i].isdigit() and i < len(parts) - 1:
                    # an item of a list the file does not have (`cpus.3.start`, no cpus)
                    problem = f"no list item {parts[i]!r} at {format_path(loc)}"
                    raise InputError([ov.problem(problem)])
                node[key] = {}
            node = node[key]
    return tuple(loc)


# Scenario mappings whose keys contain dots (metric names, dotted paths): there one key
# spans several path parts. The value is the keys an entry itself may have.
DOTTED_KEY_MAPS: dict[Loc, tuple[str, ...]] = {
    ("expect",): ("condition", "seeds"),
    ("overrides",): (),
    ("sweep",): (),
    ("regression", "symptom"): (),
    ("regression", "set"): (),
}


def _dotted_key(node: dict[Any, Any], loc: Loc, rest: list[str]) -> int:
    """How many of the ``rest`` path parts name one key of ``node``: the longest
    existing dotted key; in a DOTTED_KEY_MAPS mapping, everything up to an entry's
    own key (``expect.dma.faults.seeds`` -> ``dma.faults``)."""
    for n in range(len(rest), 1, -1):
        if ".".join(rest[:n]) in node:
            return n
    inner = DOTTED_KEY_MAPS.get(loc)
    if inner is not None:
        return len(rest) - 1 if len(rest) > 1 and rest[-1] in inner else len(rest)
    return 1


def _dict_key(node: dict[Any, Any], part: str) -> str | int:
    """Integer-keyed mappings (walk_cache.entries) take integer path parts."""
    if part in node:
        return part
    if part.lstrip("-").isdigit() and (int(part) in node or all(isinstance(k, int) for k in node)):
        return int(part)
    return part


# --- validation -----------------------------------------------------------------------
def validate(
    model: type[BaseModel],
    data: Any,
    doc: YamlDoc | None,
    overrides: dict[Loc, Override] | None = None,
    prefix: Loc = (),
) -> Any:
    """Validate ``data`` against ``model``; every error becomes a located Problem.

    ``prefix`` is where ``data`` sits inside ``doc`` (for a sub-tree).
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            _problem(model, err, doc, overrides or {}, prefix)
            for err in exc.errors(include_url=False)
        ]
        raise InputError(problems) from None


def _problem(
    model: type[BaseModel],
    err: Any,
    doc: YamlDoc | None,
    overrides: dict[Loc, Override],
    prefix: Loc,
) -> Problem:
    loc: Loc = tuple(err["loc"])
    message = _message(model, err, loc)
    for ov_loc, ov in overrides.items():
        if loc[: len(ov_loc)] == ov_loc or ov_loc[: len(loc)] == loc:
            return ov.problem(message)
    full = prefix + loc
    path = format_path(full)
    if doc is None:
        return Problem("<input>", None, path, message)
    extra = err["type"] == "extra_forbidden"
    return Problem(doc.source, doc.key_line(full) if extra else doc.line_of(full), path, message)


def _message(model: type[BaseModel], err: Any, loc: Loc) -> str:
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        valid = sorted(fields_at(model, loc[:-1]))
        hint = did_you_mean(str(loc[-1]), valid)
        return f"unknown key {loc[-1]!r}{hint}; valid keys: {', '.join(valid)}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        return msg[len("Value error, ") :]
    if kind == "literal_error":
        expected = [e.strip(" '") for e in err["ctx"]["expected"].replace(" or ", ",").split(",")]
        return f"{value!r} is not one of {', '.join(expected)}{did_you_mean(str(value), expected)}"
    return f"{msg[0].lower()}{msg[1:]} (got {value!r})"


def fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The valid keys of the model found at ``loc`` inside ``model``."""
    t: Any = model
    for part in loc:
        t = _unwrap(t)
        if isinstance(t, type) and issubclass(t, BaseModel):
            field = t.model_fields.get(str(part))
            if field is None:
                return []
            t = field.annotation
        elif typing.get_origin(t) in (list, dict):
            t = typing.get_args(t)[-1]
        else:
            return []
    t = _unwrap(t)
    if isinstance(t, type) and issubclass(t, BaseModel):
        return list(t.model_fields)
    return []


def _unwrap(t: Any) -> Any:
    while True:
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            t = typing.get_args(t)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(t) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            t = models[0] if models else args[0]
        else:
            return t
