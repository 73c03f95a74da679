"""Reading results files, sweep directories and traces; pooling their histograms.

The loaders return plain parsed JSON (dicts and lists) so that the figure functions
can equally be handed data built by hand. Bad files raise ``InputError`` naming the
file and, for traces, the line.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import MAX_INPUT_BYTES, InputError, Problem, decode, read_bytes, read_text
from .validate import ResultsFile, SweepIndex, check

RESULTS_SCHEMA = "iommusim.results/1"
SWEEP_SCHEMA = "iommusim.sweep/1"


def _problem(path: Path | str, message: str, line: int | None = None) -> InputError:
    return InputError([Problem(str(path), line, "", message)])


def _read_json(path: Path) -> tuple[str, Any]:
    """The text and parsed JSON of a file: a regular UTF-8 file (``errors.read_text``),
    else InputError naming it and, for bad JSON, the line."""
    if not path.exists():
        raise _problem(path, "no such file")
    if path.is_dir():
        raise _problem(path, "is a directory")
    text = read_text(path)
    try:
        return text, json.loads(text)
    except RecursionError:
        raise _problem(path, "not valid JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise _problem(path, f"not valid JSON: {exc.msg}", exc.lineno) from None


def load_results(path: str | Path) -> dict[str, Any]:
    """A results.json (or a results directory holding one), parsed."""
    path = Path(path)
    if path.is_dir():
        if (path / "index.json").exists() and not (path / "results.json").exists():
            raise _problem(path, "is a sweep directory; name one of its points "
                           f"(e.g. {path / 'point-000'}) or use --kind sweep/flushes/reach")
        path = path / "results.json"
    text, data = _read_json(path)
    if not isinstance(data, dict) or data.get("schema") != RESULTS_SCHEMA:
        raise _problem(path, f"not an iommusim results file (schema {RESULTS_SCHEMA!r})")
    if not data.get("runs"):
        raise _problem(path, "the results hold no runs")
    check(ResultsFile, str(path), text)  # what the figures read, with its types
    data.setdefault("_path", str(path))
    return data


def load_sweep(path: str | Path) -> dict[str, Any]:
    """A sweep directory (or its index.json): parameters and every point's results.

    Returns ``{"parameters": [...], "points": [{"values": {...}, "results": {...}}],
    "_path": ...}``."""
    path = Path(path)
    index_path = path / "index.json" if path.is_dir() else path
    if path.is_dir() and not index_path.exists():
        what = "a results directory" if (path / "results.json").exists() else "not a results"
        raise _problem(path, f"no index.json: {what} directory, not a sweep (run a scenario "
                       "with a sweep: section)")
    text, index = _read_json(index_path)
    if not isinstance(index, dict) or index.get("schema") != SWEEP_SCHEMA:
        raise _problem(index_path, f"not an iommusim sweep index (schema {SWEEP_SCHEMA!r})")
    if not index.get("points"):
        raise _problem(index_path, "the sweep has no points")
    check(SweepIndex, str(index_path), text)
    base = index_path.parent
    points = []
    for point in index.get("points", []):
        results = load_results(_inside(base, point["results"], index_path))
        points.append({"values": dict(point.get("values", {})), "results": results})
    if not points:
        raise _problem(index_path, "the sweep has no points")
    return {"parameters": list(index.get("parameters", [])), "points": points,
            "_path": str(base)}


def _inside(base: Path, name: str, index_path: Path) -> Path:
    """A point's results path from the index: relative, and inside the sweep directory
    (an index must not send the plotter to read arbitrary files)."""
    target = (base / name).resolve()
    if Path(name).is_absolute() or not target.is_relative_to(base.resolve()):
        raise _problem(index_path, f"a point's results {name!r} lies outside the sweep "
                       "directory")
    return base / name


TRACE_SUFFIXES = (".jsonl.gz", ".jsonl")  # as iommusim run writes them (gzip by default)


def trace_seed(path: str | Path) -> str:
    """'trace-3.jsonl.gz' -> '3' (the name without 'trace-' and the trace suffix)."""
    name = Path(path).name
    for suffix in TRACE_SUFFIXES:
        name = name.removesuffix(suffix)
    return name.removeprefix("trace-")


def is_trace(path: str | Path) -> bool:
    return Path(path).name.endswith(TRACE_SUFFIXES)


def _trace_text(path: Path) -> str:
    """A trace file's text: ``.jsonl`` as it is, ``.jsonl.gz`` decompressed."""
    if not path.name.endswith(".gz"):
        return read_text(path)
    with gzip.GzipFile(fileobj=io.BytesIO(read_bytes(path)), mode="rb") as f:
        data = f.read(8 * MAX_INPUT_BYTES + 1)  # bounded: a small file may inflate hugely
    if len(data) > 8 * MAX_INPUT_BYTES:
        raise _problem(path, f"decompresses to more than {8 * MAX_INPUT_BYTES:,} bytes")
    return decode(str(path), data)


def load_trace(path: str | Path) -> list[dict[str, Any]]:
    """A trace-<seed>.jsonl(.gz) file: one record (cycle, component, event, fields) per line."""
    path = Path(path)
    if not path.exists():
        raise _problem(path, "no such file")
    try:
        lines = _trace_text(path).splitlines()
    except FileNotFoundError:
        raise _problem(path, "no such file") from None
    except (gzip.BadGzipFile, EOFError, zlib.error):
        raise _problem(path, "not a complete gzip file") from None
    except UnicodeDecodeError:
        raise _problem(path, "not UTF-8 text") from None
    except OSError as exc:
        raise _problem(path, f"cannot read: {exc.strerror}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _problem(path, f"not a JSON line: {exc.msg}", number) from None
        if not isinstance(rec, dict) or not {"cycle", "component", "event"} <= rec.keys():
            raise _problem(path, "a trace record needs cycle, component and event", number)
        records.append(rec)
    if not records:
        raise _problem(path, "the trace is empty")
    return records


def trace_files(folder: str | Path) -> dict[int, Path]:
    """The traces in a results directory, by seed."""
    out = {}
    for p in sorted(Path(folder).glob("trace-*.jsonl*"), reverse=True):  # plain wins over .gz
        seed = trace_seed(p)
        if seed.isdigit() and is_trace(p):
            out[int(seed)] = p
    return dict(sorted(out.items()))


# --- histograms -------------------------------------------------------------------------
def select_runs(results: dict[str, Any], seed: int | None = None) -> list[dict[str, Any]]:
    """All runs, or the run of one seed (InputError if it is not there)."""
    runs = list(results.get("runs", []))
    if seed is None:
        return runs
    mine = [r for r in runs if r.get("seed") == seed]
    if not mine:
        seeds = ", ".join(str(r.get("seed")) for r in runs)
        raise _problem(results.get("_path", "results"), f"no run with seed {seed} "
                       f"(seeds: {seeds})")
    return mine


def pooled(runs: Iterable[dict[str, Any]], name: str) -> dict[str, Counter[int]]:
    """A distribution (``dma.latency``, ``cpu.latency``, ``cpu.flush_lines``) summed over
    runs: group -> Counter(value -> count). JSON's string keys become numbers."""
    out: dict[str, Counter[int]] = {}
    for run in runs:
        for group, hist in (run.get("distributions", {}).get(name) or {}).items():
            counter = out.setdefault(group, Counter())
            for value, count in hist.items():
                counter[int(float(value))] += int(count)
    return out


def hist_arrays(counter: Counter[int]) -> tuple[list[int], list[int]]:
    """Sorted values and their counts."""
    values = sorted(counter)
    return values, [counter[v] for v in values]


def hist_mean(counter: Counter[int]) -> float:
    n = sum(counter.values())
    return sum(v * c for v, c in counter.items()) / n if n else 0.0


def hist_percentile(counter: Counter[int], q: float) -> float:
    """The smallest value with at least q% of the counts at or below it."""
    n = sum(counter.values())
    if not n:
        return 0.0
    need = q / 100 * n
    seen = 0
    for value in sorted(counter):
        seen += counter[value]
        if seen >= need:
            return float(value)
    return float(max(counter))


DERIVED_METRICS = {
    "iotlb.hit_rate": ("iotlb.hits", "iotlb.lookups"),
    "walk_cache.hit_rate": ("walk_cache.hits", "walk_cache.lookups"),
}


def run_metric(run: dict[str, Any], name: str) -> float | None:
    """A metric of one run; also the derived hit rates (fractions 0..1)."""
    metrics = run.get("metrics", {})
    if name in metrics:
        return float(metrics[name])
    if name in DERIVED_METRICS:
        num, den = DERIVED_METRICS[name]
        if num in metrics and den in metrics:
            return float(metrics[num]) / metrics[den] if metrics[den] else 0.0
    return None


def metric_names(results: dict[str, Any]) -> list[str]:
    runs = results.get("runs") or [{}]
    names = list(runs[0].get("metrics", {}))
    return names + [d for d, (a, b) in DERIVED_METRICS.items() if a in names and b in names]


def metric_stats(results: dict[str, Any], name: str) -> tuple[float, float, float] | None:
    """(mean, min, max) of a metric over the seeds of one results file."""
    values = [run_metric(r, name) for r in results.get("runs", [])]
    if not values or any(v is None for v in values):
        return None
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals), min(vals), max(vals)
