"""A pytest plugin: every scenario with a ``regression:`` guard becomes a test item.

For projects that keep their own scenarios beside their tests. Registered through the
``pytest11`` entry point, so installing iommusim is enough; it stays inert until the
project names where its scenarios are::

    # pytest.ini (or [tool.pytest.ini_options] in pyproject.toml)
    [pytest]
    iommusim_check = tests/scenarios
    iommusim_seeds = 20          # optional: seeds 1..N per side (default: each file's)
    iommusim_jobs = 2            # optional: worker processes (default 1)

Each ``*.yaml``/``*.yml`` file under those paths (files or folders) whose top level has
a ``regression:`` key is collected as one item, ``<file>::<scenario name>``, marked
``iommusim_check``; it runs exactly what ``iommusim check FILE`` runs and fails with
the same line. pytest only visits the folders it collects from, so the paths must lie
under ``testpaths`` or the paths given on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

INI_PATHS = "iommusim_check"
INI_SEEDS = "iommusim_seeds"
INI_JOBS = "iommusim_jobs"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI_PATHS, "scenario files or folders whose regression: guards run as "
                  "test items (iommusim check)", type="paths", default=[])
    parser.addini(INI_SEEDS, "seeds 1..N per side of each guard (default: each "
                  "scenario's run.seeds)", default="")
    parser.addini(INI_JOBS, "worker processes per scenario run (default 1)", default="1")
    group = parser.getgroup("iommusim")
    group.addoption("--iommusim-seeds", type=int, metavar="N", help=f"overrides {INI_SEEDS}")
    group.addoption("--iommusim-jobs", type=int, metavar="J", help=f"overrides {INI_JOBS}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "iommusim_check: a scenario's regression guard, run "
                            "by the iommusim plugin")


def _under(path: Path, roots: list[Path]) -> bool:
    path = path.resolve()
    return any(path == r or r in path.parents for r in (r.resolve() for r in roots))


def has_guard(path: Path) -> bool:
    """A YAML mapping with a top-level ``regression:`` key (a file that does not parse
    is left to other plugins: it is no scenario of ours to report)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "regression" in data


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.File | None:
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    roots = parent.config.getini(INI_PATHS)
    if not roots or not _under(file_path, roots) or not has_guard(file_path):
        return None
    return GuardFile.from_parent(parent, path=file_path)


class GuardFile(pytest.File):
    def collect(self) -> Any:
        data = yaml.safe_load(self.path.read_text())
        name = str(data.get("name") or self.path.stem)
        yield GuardItem.from_parent(self, name=name)


class GuardFailed(Exception):
    """The guard did not hold (its line and reasons are the message)."""


class GuardItem(pytest.Item):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_marker("iommusim_check")

    def _options(self) -> tuple[list[int] | None, int]:
        config = self.config
        seeds = config.getoption("--iommusim-seeds") or int(config.getini(INI_SEEDS) or 0)
        jobs = config.getoption("--iommusim-jobs") or int(config.getini(INI_JOBS) or 1)
        return (list(range(1, seeds + 1)) if seeds else None), jobs

    def runtest(self) -> None:
        from .experiment.regression import check_one, plan

        seeds, jobs = self._options()
        (planned,) = plan([self.path])
        result = check_one(planned, seeds=seeds, jobs=jobs)
        self.user_properties.append(("iommusim_check", result.line()))
        if result.checked:
            off, on = result.sides["off"], result.sides["on"]
            self.user_properties += [("bug.symptomatic", off.count), ("bug.runs", off.runs),
                                     ("fix.symptomatic", on.count), ("fix.runs", on.runs)]
        if not result.ok:
            raise GuardFailed(result.line())

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> Any:
        from .errors import InputError

        if isinstance(excinfo.value, GuardFailed):
            return f"iommusim check: {excinfo.value}"
        if isinstance(excinfo.value, InputError):
            return "iommusim check: bad input\n" + "\n".join(
                f"  {p}" for p in excinfo.value.problems)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"iommusim check: {self.name}"
