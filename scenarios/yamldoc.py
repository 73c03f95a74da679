"""YAML documents that remember where every key came from, and strict validation.

A document keeps the composed node tree beside the data so that a validation error's
key path can be turned back into a line number. Overrides (a scenario's
``overrides:``, the command line's ``--set``, sweep points) are applied to the data
before validation and remember their own origin, so an error caused by an override
points at the override.
"""

from __future__ import annotations

import copy
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import InputError, Problem, did_you_mean, format_path, json_line, read_text

Loc = tuple[str | int, ...]


MAX_DEPTH = 64
"""Nesting depth of a YAML file: a scenario needs about 12 (three per nested ``repeat``);
deeper nesting only exhausts the parser's recursion."""
MAX_NODES = 200_000
"""YAML nodes after expanding aliases (``*name``): a scenario with every key and a
thousand ops has a few thousand; an alias bomb (each level repeating the one below)
reaches billions from a few hundred bytes."""


class YamlDoc:
    """A parsed YAML mapping and its node tree."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        try:
            _check_shape(source, text)
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            raise InputError([_yaml_problem(source, text, exc)]) from None
        _check_expansion(source, self.root)
        try:
            self.data = yaml.SafeLoader("").construct_document(self.root) if self.root else None
        except yaml.YAMLError as exc:
            raise InputError([_yaml_problem(source, text, exc)]) from None
        if not isinstance(self.data, dict):
            raise InputError([Problem(source, 1, "", "the file must be a YAML mapping of keys")])
        duplicates = sorted(_duplicate_keys(self.root), key=lambda d: d[1])
        if duplicates:
            raise InputError(
                [Problem(source, ln, format_path(loc), "duplicate key") for loc, ln in duplicates]
            )

    @classmethod
    def read(cls, path: Path) -> YamlDoc:
        """Read a file (a regular file, UTF-8, bounded in size: ``errors.read_text``)."""
        return cls(str(path), read_text(path))

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


class JsonDoc:
    """A JSON file (a replay file, a results file) located like a YamlDoc: a problem's
    key path is turned back into a line (``errors.json_line``)."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text
        try:
            self.data = json.loads(text)
        except RecursionError:
            raise InputError([Problem(source, None, "", "not JSON: nested too deeply")]) from None
        except json.JSONDecodeError as exc:
            problem = Problem(source, exc.lineno, "", f"not JSON: {exc.msg}")
            raise InputError([problem]) from None

    @classmethod
    def read(cls, path: Path) -> JsonDoc:
        return cls(str(path), read_text(path))

    prefix: Loc = ()

    def at(self, prefix: Loc) -> JsonDoc:
        """The same file seen from the sub-tree at ``prefix`` (a replay file's
        ``config.scenario``), for checks that give key paths inside that sub-tree."""
        view = copy.copy(self)
        view.prefix = (*self.prefix, *prefix)
        return view

    def line_of(self, loc: Loc) -> int | None:
        return json_line(self.text, (*self.prefix, *loc))

    key_line = line_of

    def problem(self, loc: Loc, message: str) -> Problem:
        return Problem(self.source, self.line_of(loc), format_path(loc), message)


def _child(node: yaml.Node | None, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                return value
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        items = node.value
        return items[part] if 0 <= part < len(items) else None
    return None


def _yaml_problem(source: str, text: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    position = getattr(exc, "position", None)  # a ReaderError: a character YAML refuses
    if line is None and isinstance(position, int):
        line = text.count("\n", 0, position) + 1
    reason = getattr(exc, "problem", None) or str(exc).split("\n")[0]
    return Problem(source, line, "", f"invalid YAML: {reason}")


def _check_shape(source: str, text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH from the event stream, before composing:
    PyYAML's composer recurses once per level (RecursionError at a few thousand)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1
                message = f"nested more than {MAX_DEPTH} levels deep; a scenario needs far fewer"
                raise InputError([Problem(source, line, "", message)])
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _check_expansion(source: str, root: yaml.Node | None) -> None:
    """Refuse a document whose aliases expand it beyond MAX_NODES nodes. An alias is
    the same node object as its anchor, so the expanded size is computed once per
    distinct node (children before parents), in time linear in the file."""
    if root is None:
        return
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        kids = _children(node)
        if not children_done:
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in size)
            continue
        size[id(node)] = min(1 + sum(size[id(k)] for k in kids), MAX_NODES + 1)
        if size[id(node)] > MAX_NODES:
            line = node.start_mark.line + 1
            message = (f"aliases (*name) expand this document beyond {MAX_NODES:,} nodes; "
                       "a scenario needs far fewer")
            raise InputError([Problem(source, line, "", message)])


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _duplicate_keys(root: yaml.Node) -> typing.Iterator[tuple[Loc, int]]:
    """Keys given twice in one mapping. Iterative, and each node is visited once: an
    aliased node is checked where it is defined, not again at every alias."""
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())]
    while stack:
        node, loc = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, _value in node.value:
                if key.value in keys:
                    yield (*loc, key.value), key.start_mark.line + 1
                keys.add(key.value)
            stack.extend(((v, (*loc, k.value)) for k, v in reversed(node.value)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*loc, i)) for i, item in reversed(list(enumerate(node.value))))


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
    doc: YamlDoc | JsonDoc | None,
    overrides: dict[Loc, Override] | None = None,
    prefix: Loc = (),
) -> Any:
    """Validate ``data`` against ``model``; every error becomes a located Problem.

    ``prefix`` is where ``data`` sits inside ``doc`` (for a sub-tree). Data read from a
    JSON file is validated as JSON (its object keys are strings: ``{"1": 8}`` is an
    integer-keyed map there).
    """
    try:
        if isinstance(doc, JsonDoc):
            return model.model_validate_json(json.dumps(data))
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
    doc: YamlDoc | JsonDoc | None,
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
