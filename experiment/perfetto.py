"""A trace as Perfetto sees it: Chrome trace-event JSON for ui.perfetto.dev.

``export(rows)`` turns the rows of a JSON-lines trace (``experiment.traces``) into
one trace-event document:

- a process "CPUs" with a track per CPU: each operation (map, unmap, ...) as a slice,
  its transactions (load, store, cmpxchg, flush, ...) and interrupts nested inside;
- a process "IOMMU" with a track per walker slot (each page walk a slice, its item
  reads nested inside), one for the invalidation queue (each command from the moment
  the queue serves it to its completion) and one for faults and incidents; counters
  for IOTLB occupancy, write-buffer depth and invalidation-queue depth;
- a process "Devices" with a track per device: each DMA a slice (overlapping DMAs of
  one device on extra tracks, "nic0 #2", since slices of a track must nest);
- flow arrows from each CPU store (or successful cmpxchg) to the walker reads of that
  word until one sees the stored value (the reads before it "missed" it), and from each
  CPU cache flush to the first walker read of the lines it flushed ("seen", or
  "missed" when the walker still read a stale value, e.g. behind the write buffer).

Time: one cycle is shown as one nanosecond (the clock rate is in the process names and
``otherData``), so every event keeps its exact cycle. Perfetto reads ``ts`` in
microseconds as a double and truncates to whole nanoseconds, so every time is written a
quarter of a cycle late, which truncation takes back exactly.

``check(doc)`` is the structural check the tests run on a catalog race: slices nest on
every track, every flow has both ends inside a slice of its track, every track is named.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]
CPUS, IOMMU, DEVICES = 1, 2, 3
PROCESS_NAMES = {CPUS: "CPUs", IOMMU: "IOMMU", DEVICES: "Devices"}
CPU_RE = re.compile(r"cpu\d+$")
LINE = 64  # bytes per cache line, for matching a flush to the walker reads it covers
QUEUE_TID, INCIDENT_TID = 1, 2  # IOMMU tracks; walker slot n is tid 10 + n
FIELDS = ("cycle", "component", "event")


def _us(cycles: float) -> float:
    """Cycles as the microseconds of trace-event JSON (one cycle shown as 1 ns)."""
    return (cycles + 0.25) / 1000


def _args(row: Row, drop: Iterable[str] = ()) -> dict[str, Any]:
    skip = {*FIELDS, *drop}
    return {k: (hex(v) if k in ("pa", "iova", "line", "table_pa", "root_pa") and isinstance(
        v, int) else v) for k, v in row.items() if k not in skip and v is not None}


@dataclass
class Builder:
    """The events of one trace, as they are made."""

    end: int  # the last cycle of the trace: the end of anything unfinished
    events: list[dict[str, Any]] = field(default_factory=list)
    threads: dict[tuple[int, int], str] = field(default_factory=dict)
    flows: list[dict[str, Any]] = field(default_factory=list)
    _flow_id: int = 0

    def track(self, pid: int, tid: int, name: str) -> None:
        self.threads.setdefault((pid, tid), name)

    def slice(self, pid: int, tid: int, name: str, start: int, cycles: int,
              args: dict[str, Any], cat: str) -> tuple[int, int, int, int]:
        self.events.append({"ph": "X", "name": name, "cat": cat, "pid": pid, "tid": tid,
                            "ts": _us(start), "dur": _us(max(cycles, 0)), "args": args})
        return pid, tid, start, max(cycles, 0)

    def counter(self, name: str, cycle: int, value: int) -> None:
        self.events.append({"ph": "C", "name": name, "pid": IOMMU, "ts": _us(cycle),
                            "args": {"value": value}})

    def flow(self, name: str, src: tuple[int, int, int, int],
             dst: tuple[int, int, int, int]) -> None:
        """An arrow from slice ``src`` to slice ``dst`` (pid, tid, start, cycles), bound at
        their middles so each end lands inside its own slice."""
        self._flow_id += 1
        for ph, (pid, tid, start, cycles) in (("s", src), ("f", dst)):
            ev = {"ph": ph, "id": self._flow_id, "name": name, "cat": "visibility",
                  "pid": pid, "tid": tid, "ts": _us(start + cycles / 2)}
            if ph == "f":
                ev["bp"] = "e"
            self.flows.append(ev)

    def document(self, clock_ghz: float | None, title: str) -> dict[str, Any]:
        clock = f" (1 ns shown = 1 cycle at {clock_ghz:g} GHz)" if clock_ghz else ""
        meta: list[dict[str, Any]] = []
        for pid in sorted({p for p, _ in self.threads}):
            meta.append({"ph": "M", "name": "process_name", "pid": pid,
                         "args": {"name": PROCESS_NAMES[pid] + clock}})
            meta.append({"ph": "M", "name": "process_sort_index", "pid": pid,
                         "args": {"sort_index": pid}})
        for (pid, tid), name in sorted(self.threads.items()):
            meta.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                         "args": {"name": name}})
            meta.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                         "args": {"sort_index": tid}})
        # Parents before children at equal times: sorted by start, longest first.
        body = sorted(self.events, key=lambda e: (e["ts"], -e.get("dur", 0)))
        return {"traceEvents": meta + body + self.flows, "displayTimeUnit": "ns",
                "otherData": {"generator": "iommusim", "title": title,
                              "clock_ghz": clock_ghz, "time_unit": "1 ns = 1 cycle"}}


def export(rows: Sequence[Row], *, clock_ghz: float | None = None,
           title: str = "") -> dict[str, Any]:
    """The trace-event document of a trace's rows (in trace order)."""
    b = Builder(end=max((int(r["cycle"]) for r in rows), default=0))
    cpus = sorted({r["component"] for r in rows if CPU_RE.match(str(r["component"]))},
                  key=_natural)
    cpu_tid = {name: i + 1 for i, name in enumerate(cpus)}
    for name, tid in cpu_tid.items():
        b.track(CPUS, tid, name)
    stores = _cpu_tracks(b, rows, cpu_tid)
    reads = _walker_tracks(b, rows)
    _queue_track(b, rows)
    _devices(b, rows)
    _incidents(b, rows)
    _counters(b, rows)
    _flows(b, stores, reads)
    return b.document(clock_ghz, title)


def _natural(name: str) -> tuple[str, int]:
    m = re.match(r"(.*?)(\d+)$", name)
    return (m[1], int(m[2])) if m else (name, -1)


# --- CPUs -----------------------------------------------------------------------------------
def _cpu_tracks(b: Builder, rows: Sequence[Row], cpu_tid: dict[str, int]
                ) -> list[tuple[Row, tuple[int, int, int, int]]]:
    """Operations, transactions and interrupts; returns the writes and flushes with
    their slices, for the flows."""
    open_ops: dict[str, Row] = {}
    writes = []
    for r in rows:
        tid = cpu_tid.get(r["component"])
        if tid is None:
            continue
        ev, cycle = r["event"], int(r["cycle"])
        if ev == "op_start":
            open_ops[r["component"]] = r
        elif ev == "op_end":
            start = open_ops.pop(r["component"], None)
            if start is not None:
                b.slice(CPUS, tid, str(r.get("op")), int(start["cycle"]),
                        cycle - int(start["cycle"]), _args(r, ("op",)), "op")
        elif ev == "interrupt":
            b.slice(CPUS, tid, "interrupt", cycle, int(r.get("duration") or 0), _args(r), "irq")
        elif "cost" in r:
            s = b.slice(CPUS, tid, ev, cycle, int(r["cost"]), _args(r, ("cost",)), "tx")
            if ev in ("store", "flush") or (ev == "cmpxchg" and r.get("result") in (
                    r.get("expected"), True)):
                writes.append((r, s))
    for name, r in open_ops.items():  # still running when the trace ends
        b.slice(CPUS, cpu_tid[name], f"{r.get('op')} (unfinished)", int(r["cycle"]),
                b.end - int(r["cycle"]), {}, "op")
    return writes


# --- the IOMMU ------------------------------------------------------------------------------
def _walker_tracks(b: Builder, rows: Sequence[Row]) -> list[tuple[Row, tuple[int, int, int, int]]]:
    """Walks on their slots, item reads nested inside; returns the reads with their
    slices. Reads of a trace without walk ids go on one "walker port" track."""
    walks: dict[int, Row] = {}  # walk id -> walk_start
    steps: dict[int, list[Row]] = defaultdict(list)  # walk id -> its reads and updates
    loose: list[Row] = []
    ends: dict[int, Row] = {}
    for r in rows:
        comp, ev = r["component"], r["event"]
        if comp == "iommu.walker" and ev == "walk_start":
            walks[r["walk"]] = r
        elif comp == "iommu.walker" and ev == "walk_end":
            ends[r["walk"]] = r
        elif comp == "iommu.port" and ev in ("read", "update"):
            (steps[r["walk"]] if r.get("walk") in walks else loose).append(r)
    reads = []
    for walk, start in walks.items():
        tid = 10 + int(start.get("slot", 0))
        b.track(IOMMU, tid, f"walker slot {start.get('slot', 0)}")
        end = ends.get(walk)
        stop = int(end["cycle"]) if end is not None else b.end
        args = {**_args(start, ("slot",)), **(_args(end, ("slot", "walk")) if end else {})}
        name = "walk" if end is not None else "walk (unfinished)"
        b.slice(IOMMU, tid, name, int(start["cycle"]), stop - int(start["cycle"]), args, "walk")
        mine = steps.get(walk, [])
        for i, r in enumerate(mine):
            until = int(mine[i + 1]["cycle"]) if i + 1 < len(mine) else stop
            s = b.slice(IOMMU, tid, r["event"], int(r["cycle"]), until - int(r["cycle"]),
                        _args(r, ("walk",)), "walk")
            if r["event"] == "read":
                reads.append((r, s))
    if loose:
        b.track(IOMMU, 9, "walker port")
        for r in loose:
            s = b.slice(IOMMU, 9, r["event"], int(r["cycle"]), 0, _args(r), "walk")
            if r["event"] == "read":
                reads.append((r, s))
    return reads


def _queue_track(b: Builder, rows: Sequence[Row]) -> None:
    """Invalidation-queue commands, from service start to completion (the queue is a
    FIFO: the n-th command done is the n-th submitted)."""
    submitted: list[Row] = []
    served = 0
    free = 0  # the cycle the queue finished its previous command
    for r in rows:
        if r["component"] != "iommu.invalidation":
            continue
        if r["event"] == "submit":
            submitted.append(r)
        elif r["event"] == "done" and served < len(submitted):
            sub = submitted[served]
            served += 1
            start = max(int(sub["cycle"]), free)
            free = int(r["cycle"])
            b.track(IOMMU, QUEUE_TID, "invalidation queue")
            b.slice(IOMMU, QUEUE_TID, str(r.get("kind")), start, free - start,
                    {**_args(r, ("kind",)), "submitted": int(sub["cycle"])}, "command")


def _incidents(b: Builder, rows: Sequence[Row]) -> None:
    for r in rows:
        if r["component"] == "iommu.walker" and r["event"] not in ("walk_start", "walk_end"):
            b.track(IOMMU, INCIDENT_TID, "faults and incidents")
            b.slice(IOMMU, INCIDENT_TID, str(r["event"]), int(r["cycle"]), 0, _args(r),
                    "incident")


def _counters(b: Builder, rows: Sequence[Row]) -> None:
    """IOTLB entries, write-buffer depth and invalidation-queue depth, where the trace
    carries them (``entries`` and ``depth`` fields)."""
    for r in rows:
        comp, ev = r["component"], r["event"]
        if comp == "iommu.iotlb" and "entries" in r:
            b.counter("IOTLB entries", int(r["cycle"]), int(r["entries"]))
        elif r.get("depth") is not None and (comp == "iommu.write_buffer" or (
                comp == "cache" and ev == "write_back")):  # a line drained, or pushed in
            b.counter("write buffer depth", int(r["cycle"]), int(r["depth"]))
        elif comp == "iommu.invalidation" and ev == "submit" and "depth" in r:
            b.counter("invalidation queue depth", int(r["cycle"]), int(r["depth"]))


# --- devices --------------------------------------------------------------------------------
def _devices(b: Builder, rows: Sequence[Row]) -> None:
    """Each DMA a slice on its device's track; overlapping DMAs on extra lanes."""
    names = sorted({r["component"] for r in rows if r["event"] in ("request", "complete")
                    and not str(r["component"]).startswith("iommu")}, key=_natural)
    lanes: dict[str, list[int]] = {n: [] for n in names}  # each lane: the cycle it is free
    pending: dict[tuple[str, Any], Row] = {}
    done: list[tuple[Row, Row | None]] = []
    for r in rows:
        if r["component"] not in lanes:
            continue
        key = (r["component"], r.get("index"))
        if r["event"] == "request":
            pending[key] = r
        elif r["event"] == "complete" and key in pending:
            done.append((pending.pop(key), r))
    done += [(r, None) for r in pending.values()]
    done.sort(key=lambda pair: (int(pair[0]["cycle"]), str(pair[0]["component"])))
    for req, end in done:
        name, start = req["component"], int(req["cycle"])
        stop = int(end["cycle"]) if end is not None else b.end
        free = lanes[name]
        lane = next((i for i, t in enumerate(free) if t <= start), len(free))
        if lane == len(free):
            free.append(0)
        free[lane] = stop
        tid = 100 * (names.index(name) + 1) + lane
        b.track(DEVICES, tid, name if lane == 0 else f"{name} #{lane + 1}")
        label = "DMA " + ("write" if req.get("is_write") else "read")
        args = {**_args(req, ("index",)), **(_args(end, ("index",)) if end else {}),
                "index": req.get("index")}
        b.slice(DEVICES, tid, label if end is not None else f"{label} (unfinished)", start,
                stop - start, args, "dma")


# --- flows ----------------------------------------------------------------------------------
def _flows(b: Builder, writes: list[tuple[Row, tuple[int, int, int, int]]],
           reads: list[tuple[Row, tuple[int, int, int, int]]]) -> None:
    """Arrows from CPU writes and flushes to the walker reads that saw or missed them."""
    events = sorted([(int(r["cycle"]), 0, i, "w") for i, (r, _) in enumerate(writes)]
                    + [(int(r["cycle"]), 1, i, "r") for i, (r, _) in enumerate(reads)])
    stores: dict[int, tuple[int, int]] = {}  # pa -> (write index, value the walker must see)
    flushes: dict[int, list[int]] = defaultdict(list)  # line -> flush indices not yet read
    linked: set[int] = set()
    for _, _, i, kind in events:
        if kind == "w":
            r, _s = writes[i]
            pa = int(r["pa"])
            if r["event"] == "flush":
                for line in range(pa // LINE, (pa + max(int(r.get("nbytes") or 1), 1) - 1)
                                  // LINE + 1):
                    flushes[line].append(i)
            else:
                stores[pa] = (i, int(r["new"] if r["event"] == "cmpxchg" else r["value"]))
            continue
        r, dst = reads[i]
        pa = int(r["pa"])
        if pa in stores:
            w, value = stores[pa]
            seen = int(r.get("value") or 0) == value
            b.flow("store seen" if seen else "store missed", writes[w][1], dst)
            if seen:
                del stores[pa]
        for w in flushes.pop(pa // LINE, []):
            if w not in linked:
                linked.add(w)
                b.flow("flush missed" if r.get("stale") else "flush seen", writes[w][1], dst)


# --- the structural check -------------------------------------------------------------------
def check(doc: dict[str, Any]) -> list[str]:
    """What is wrong with a trace-event document for Perfetto: slices that do not nest on
    their track, B without E, flows missing an end or not inside a slice, unnamed tracks.
    Empty when the document is sound."""
    problems: list[str] = []
    events = doc.get("traceEvents", [])
    named = {(e["pid"], e.get("tid")) for e in events if e.get("ph") == "M"
             and e.get("name") == "thread_name" and e.get("args", {}).get("name")}
    processes = {e["pid"] for e in events if e.get("ph") == "M"
                 and e.get("name") == "process_name" and e.get("args", {}).get("name")}
    spans: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    opened: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        ph, key = e.get("ph"), (e.get("pid"), e.get("tid"))
        if ph in ("X", "B", "E", "i", "s", "f") and key not in named:
            problems.append(f"unnamed track {key}: {e.get('name')}")
        if ph in ("C",) and (not e.get("name") or e.get("pid") not in processes):
            problems.append(f"counter without a name or process: {e}")
        if ph == "X":
            if "dur" not in e:
                problems.append(f"slice without a duration: {e.get('name')} at {e.get('ts')}")
            spans[key].append((_ns(e["ts"]), _ns(e["ts"]) + _ns(e.get("dur", 0))))
        elif ph == "B":
            opened[key].append(e)
        elif ph == "E" and not opened[key]:
            problems.append(f"E without B on {key} at {e.get('ts')}")
        elif ph == "E":
            b = opened[key].pop()
            spans[key].append((_ns(b["ts"]), _ns(e["ts"])))
    problems += [f"B without E on {k}: {v[0].get('name')}" for k, v in opened.items() if v]
    for key, intervals in spans.items():
        problems += _nesting(key, intervals)
    problems += _check_flows(events, spans)
    return problems


def _ns(us: float) -> int:
    return int(us * 1000)  # as Perfetto reads it: truncated to whole nanoseconds


def _nesting(key: tuple[int, int], intervals: list[tuple[float, float]]) -> list[str]:
    stack: list[tuple[float, float]] = []
    for start, end in sorted(intervals, key=lambda iv: (iv[0], -iv[1])):
        while stack and stack[-1][1] <= start:
            stack.pop()
        if stack and end > stack[-1][1]:
            return [f"slices overlap without nesting on {key}: {stack[-1]} and "
                    f"{(start, end)}"]
        stack.append((start, end))
    return []


def _check_flows(events: list[dict[str, Any]],
                 spans: dict[tuple[int, int], list[tuple[float, float]]]) -> list[str]:
    ends: dict[tuple[Any, Any, Any], list[str]] = defaultdict(list)
    problems = []
    for e in events:
        if e.get("ph") not in ("s", "f"):
            continue
        ends[(e.get("id"), e.get("cat"), e.get("name"))].append(e["ph"])
        t, key = _ns(e["ts"]), (e.get("pid"), e.get("tid"))
        if not any(a <= t <= z for a, z in spans.get(key, [])):
            problems.append(f"flow {e.get('id')} ({e['ph']}) is not inside a slice of {key}")
    problems += [f"flow {k[0]} {k[2]!r} has ends {v}" for k, v in ends.items()
                 if sorted(v) != ["f", "s"]]
    return problems
