"""Input problems: one clear message per mistake, naming file, line and key path."""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn


@dataclass(frozen=True)
class Problem:
    source: str  # a file name, or "--set" for a command-line override
    line: int | None
    path: str  # dotted key path, e.g. "cpus[0].ops[1].map.size"
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class InputError(Exception):
    """Bad input: every problem found, reported together (exit code 2)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        # The same mistake can be found twice (every sweep point, a hardware file
        # validated on its own and through a scenario): report it once.
        self.problems = list(dict.fromkeys(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


def format_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest valid choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- reading a user's file ------------------------------------------------------------------
MAX_INPUT_BYTES = 64 << 20
"""The largest input file read (scenario, hardware, replay, results, trace): far above any
file iommusim writes for a scenario, and small enough that a wrong path (a disk image, a
core dump) is refused at once instead of being read into memory."""


def read_text(path: Path, limit: int = MAX_INPUT_BYTES) -> str:
    """A user's input file as text, or InputError with one located message.

    Only a regular file is opened: a FIFO or a device would block or never end. The
    bytes must be UTF-8 without NUL bytes (a binary file, Latin-1 or UTF-16 text is
    refused with the line of the first bad byte, not a UnicodeDecodeError traceback).
    """
    return decode(str(path), read_bytes(path, limit))


def read_bytes(path: Path, limit: int = MAX_INPUT_BYTES) -> bytes:
    """A regular file's bytes, at most ``limit`` of them, or InputError."""
    source = str(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise InputError([Problem(source, None, "", f"cannot read: {exc.strerror}")]) from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError([Problem(source, None, "", "cannot read: a directory, not a file")])
    if not stat.S_ISREG(st.st_mode):
        raise InputError([Problem(source, None, "", "cannot read: not a regular file (a FIFO, "
                                  "socket or device)")])
    if st.st_size > limit:
        raise InputError([Problem(source, None, "", f"is {st.st_size:,} bytes; input files are "
                                  f"at most {limit:,} bytes")])
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise InputError([Problem(source, None, "", f"cannot read: {exc.strerror}")]) from None
    if len(data) > limit:
        raise InputError([Problem(source, None, "", f"is larger than {limit:,} bytes")])
    return data


def decode(source: str, data: bytes) -> str:
    """UTF-8 text without NUL bytes, else InputError naming the line of the first bad byte."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError([Problem(source, 1, "", "is UTF-16 text; save it as UTF-8")])
    nul = data.find(b"\0")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if 0 <= nul < exc.start:
            return _nul(source, data, nul)
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start]
        raise InputError([Problem(source, line, "", f"is not UTF-8 text (byte {byte:#04x}); "
                                  "save it as UTF-8")]) from None
    if nul >= 0:
        return _nul(source, data, nul)
    return text.removeprefix("\ufeff")


def _nul(source: str, data: bytes, at: int) -> NoReturn:
    line = data.count(b"\n", 0, at) + 1
    raise InputError([Problem(source, line, "", "contains a NUL byte: a binary file, not text")])


# --- a file a command writes -------------------------------------------------------------
def check_output_file(path: Path, option: str, ours: Callable[[Path], bool]) -> None:
    """InputError unless ``path`` may be written: its folder exists and is writable, and
    it is new or a file iommusim wrote (``ours``). Called before any work is done
    (the commands' -o, replay's trace and figure; directories: experiment.outdir)."""
    folder = path.parent

    def refuse(message: str) -> NoReturn:
        raise InputError([Problem(option, None, "", message)])

    if path.is_dir():
        refuse(f"{path} is a directory; name a file")
    if not folder.exists():
        refuse(f"cannot write {path}: no such directory {folder}")
    if not folder.is_dir():
        refuse(f"cannot write {path}: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        refuse(f"cannot write {path}: {folder} is not writable")
    if path.exists() and not ours(path):
        refuse(f"{path} exists and iommusim did not write it; iommusim replaces only its own "
               "files: name another file")


# --- where a key path is in a JSON text -------------------------------------------------------
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]|[^\s{}\[\],:"]+', re.S)


def json_line(text: str, loc: Sequence[str | int]) -> int | None:
    """The line of the value at ``loc`` (keys and list indexes) in a JSON text, or of the
    deepest part of ``loc`` that exists; None if the text is not a JSON container.

    Used only to locate a problem once one is found, so it may be slow-ish, but it is
    iterative (no recursion limit) and linear in the text."""
    want = list(loc)
    best: int | None = None
    stack: list[list[Any]] = []  # [kind, key or index, expecting a key]
    line, pos = 1, 0
    for m in _JSON_TOKEN.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        tok = m.group()
        top = stack[-1] if stack else None
        if top is not None and top[0] == "{" and top[2] and tok.startswith('"'):
            try:
                top[1] = json.loads(tok)
            except ValueError:
                top[1] = tok.strip('"')
            top[2] = False
            continue
        if tok in ",:":
            if tok == "," and top is not None:
                if top[0] == "{":
                    top[2] = True
                else:
                    top[1] += 1
            continue
        if tok in "}]":
            stack.pop()
            if [t[1] for t in stack] == want[: len(stack)]:
                return best  # a container on the wanted path ended without the rest
            continue
        path = [t[1] for t in stack]
        if path == want[: len(path)]:
            best = line
            if len(path) == len(want):
                return line
        if tok == "{":
            stack.append(["{", None, True])
        elif tok == "[":
            stack.append(["[", 0, False])
    return best
