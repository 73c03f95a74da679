"""Runs of IOTLB hits advanced arithmetically: a stream's periods, many at once.

Once a stream's requests are all eager hits (``Stream._eager``), what its workers do
is fixed by a small state: which phase each in-flight request waits in and how far
its wait ends from now (in the order of the pipeline's heap), and how far the next
issue may be (the gap). Whenever a worker is about to issue, that state is noted; if
it was seen before -- ``P`` cycles and ``p`` requests earlier, with only eager hits
issued and completed in between -- the stream is periodic: the next periods repeat
the last one shifted by ``P`` cycles and ``p`` indices, event for event, as long as

- every request in them is an eager hit too (checked request by request before
  anything is done: a lookup that would not be a usable hit ends the run at the
  period before it),
- every event of them, and the in-flight state they end in, comes before anything
  else can act (SimPy's next event), and
- the stream has a period left after them, and the run's wait budget allows them.

Then ``m`` periods are done at once: the lookups in index order (one per run of
requests on one 4K page; ``Iotlb.hits_again`` counts the rest: recency is what the
first left), the DRAM counts, the completions (all hits of one latency), the random
draws in order; the clock, the cursor and every heap entry move on by ``m * P`` (a
uniform shift keeps the heap's order, and every entry keeps its event id: nothing
else can fall between them before SimPy's next event), and the in-flight requests
become their counterparts ``m * p`` indices on. The waits of those periods count as
skipped, so ``sim.events`` and the run limit see the numbers the periods would give.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from heapq import heappop
from typing import TYPE_CHECKING, Any

from .dma import OK, DmaRecord, Translation
from .pipeline import Wake
from .stream import IDLE_KINDS, TOP

if TYPE_CHECKING:
    from .stream import Stream

_SEEN = 256  # states remembered while looking for a period
_CHUNK = 8192  # requests checked (and random offsets drawn) before any is issued
_WORTH = 8  # look for periods only with at least this many latencies of room
_ISSUES = 4096  # issue cycles remembered for records of advanced requests


class HitRuns:
    """Period detection and arithmetic advance for one stream."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.seen: dict[Any, tuple[int, ...]] = {}
        self.exact_issues = 0  # requests issued to act at their own cycles, so far
        self.periods = 0  # periods advanced at once (tests and profiles read it)
        # (index, issue cycle) of recent issues, when someone wants a record of each
        self.issues: deque[tuple[int, int]] = deque(maxlen=_ISSUES)

    def at_top(self) -> None:
        """A worker is about to issue with no exact request in flight: note the state,
        and advance whole periods if it repeats."""
        st = self.stream
        dev, env = st.device, st.env
        heap, now, queue = st.pipeline.heap, env._now, env._queue
        if dev.records is not None or dev.listeners:
            self.issues.append((st.cursor.issued, now))  # the next index issues now
        if queue and queue[0][0] - now < _WORTH * st.latency:
            return
        for entry in heap:
            if entry[3] not in IDLE_KINDS:
                self.seen.clear()
                return
        state = (tuple((e[0] - now, e[1], e[3]) for e in sorted(heap)),
                 st.cursor.not_before - now)
        mark = (now, st.cursor.issued, st.pushes, env.skipped, env.pipelined, dev.completed,
                self.exact_issues)
        before = self.seen.get(state)
        if before is None:
            if len(self.seen) >= _SEEN:
                self.seen.clear()
            self.seen[state] = mark
            return
        self.seen.clear()
        self._advance(before, mark)

    def _advance(self, before: tuple[int, ...], mark: tuple[int, ...]) -> None:
        st = self.stream
        env, cursor, heap = st.env, st.cursor, st.pipeline.heap
        now, issued = mark[0], mark[1]
        period, p = now - before[0], issued - before[1]
        d_pushes, d_skipped, d_pipelined = (mark[i] - before[i] for i in (2, 3, 4))
        if period <= 0 or p <= 0 or mark[5] - before[5] != p or mark[6] != before[6]:
            return  # not one steady state of eager hits
        in_flight = [e[4] for e in heap if e[3] != TOP]
        reach = max((e[0] for e in heap), default=now) - now
        m = (st.s.count - issued) // p - 1
        queue = env._queue
        if queue:
            m = min(m, (queue[0][0] - now - reach - st.latency) // period - 1)
        if env.skip_limit != float("inf"):
            m = min(m, int(env.skip_limit - env.skipped) // max(1, d_skipped) - 1)
        if m < 1 or m * p < len(in_flight):
            return
        records = st.device.records is not None or bool(st.device.listeners)
        issue_of = self._issue_times(issued, p, period) if records else None
        if records and issue_of is None:
            return
        done, last = self._issue(issued, m * p, p, in_flight, issue_of)
        m = done // p
        if not m:
            return
        shift = m * period
        env._now = now + shift
        cursor.issued = issued + done
        cursor.not_before += shift
        for i, entry in enumerate(heap):  # a uniform shift: still a heap, ids kept
            heap[i] = (entry[0] + shift, *entry[1:])
        for w in in_flight:
            w.index += done
            w.issue += shift
            w.iova, pa = last[w.index]
            w.tr = Translation(OK, pa, "iotlb")
        st.dram.uncontended(st.is_write, done)
        st.device.count(st.hit_tr, st.latency, done)
        env.skipped += m * d_skipped
        env.pipelined += m * (d_pipelined - d_pushes)  # their waits took no event ids
        self.periods += m
        self._drop_passed_wakes()

    def _issue_times(self, first: int, p: int,
                     period: int) -> Callable[[int], int] | None:
        """The issue cycle of each request from ``first`` on, by the last period's."""
        known = {index: cycle for index, cycle in self.issues if index >= first - p}
        base = [known.get(index) for index in range(first - p, first)]
        if None in base:
            return None
        return lambda i: base[(i - first) % p] + ((i - first) // p + 1) * period  # type: ignore[operator]

    def _record(self, index: int, iova: int, pa: int | None, issue: int) -> None:
        st = self.stream
        st.device.tell(DmaRecord(st.name, index, iova, st.size, st.is_write, issue,
                                 issue + st.latency, Translation(OK, pa, "iotlb")))

    def _issue(self, first: int, count: int, p: int, in_flight: list[Any],
               issue_of: Callable[[int], int] | None) -> tuple[int, dict[int, tuple[int, int]]]:
        """Issue requests ``first ..`` (at most ``count``) as eager hits, stopping at
        the period before the first that may not be one; returns how many were issued
        (a multiple of ``p``) and (iova, pa) of the last ``keep`` of them by index.
        With ``issue_of``, a record of each that completes meanwhile (all but the last
        ``keep``: one period at least; a request never completes before one issued
        earlier) is handed to the device as soon as that is sure, after those of the
        requests ``in_flight`` now, which complete first. Requests are taken in runs
        on one 4K page: one check and one lookup per run."""
        s = self.stream.s
        keep = len(in_flight)
        slots = s.length // s.size
        last: dict[int, tuple[int, int]] = {}
        recorded = first - keep  # records handed over so far end before this index
        done = 0
        chunk = max(_CHUNK // p, -(-keep // p), 1) * p  # the first holds the last ``keep``
        while done < count:
            n = min(chunk, count - done)
            start = first + done
            drawn: list[int] = []
            if s.pattern == "random":
                drawn = self._draw(n, slots)
                iovas = [s.base + slot * s.size for slot in drawn]
                runs = _runs(iovas)
            else:
                runs = self._sequential_runs(start, n, slots)
            ok = self._usable(runs)
            n_done = n if ok == n else (done + ok) // p * p - done
            if done + n_done < keep:
                n_done = 0  # too few to stand for the requests in flight: none
            self._lookups(runs, n_done)
            for k, iova, pa in _requests(runs, max(0, n_done - keep), n_done):
                last[start + k] = (iova, pa)
            if issue_of is not None and n_done:
                if not done:
                    for w in sorted(in_flight, key=lambda w: w.index):
                        self._record(w.index, w.iova, w.tr.pa, w.issue)
                upto = first + done + n_done - keep  # complete within the run for sure
                for k, iova, pa in _requests(runs, recorded - start, upto - start):
                    self._record(start + k, iova, pa, issue_of(start + k))
                recorded = upto
            if drawn and n_done < n:
                self._undraw(drawn[n_done:])
            done += n_done
            if n_done < n:
                break
        return done, last

    def _sequential_runs(self, start: int, n: int, slots: int) -> list[list[int]]:
        """Requests ``start .. start + n`` of a sequential stream as runs on one 4K page:
        [offset in the chunk, length, first iova, step, pa of the first (0: unknown)]."""
        s = self.stream.s
        size, base = s.size, s.base
        runs: list[list[int]] = []
        k = 0
        while k < n:
            slot = (start + k) % slots
            iova = base + slot * size
            length = min(-(-(((iova | 0xFFF) + 1) - iova) // size), slots - slot, n - k)
            runs.append([k, length, iova, size, 0])
            k += length
        return runs

    def _usable(self, runs: list[list[int]]) -> int:
        """How many leading requests an eager hit may serve now (one check per run:
        one 4K page); each usable run gets its first request's pa."""
        st = self.stream
        iommu, domain, is_write = st.iommu, st.domain, st.is_write
        check_truth = st.has_truth
        for run in runs:
            iova = run[2]
            pa = iommu.hit_pa(domain, iova, is_write)  # type: ignore[attr-defined]
            if pa is None or (check_truth and iommu.true_pa(domain, iova) != pa):  # type: ignore[attr-defined]
                return run[0]
            run[4] = pa
        return runs[-1][0] + runs[-1][1] if runs else 0

    def _lookups(self, runs: list[list[int]], n: int) -> None:
        """The first ``n`` requests' lookups, in order: a lookup per run, the rest of
        the run counted as hits of the same entry."""
        st = self.stream
        lookup, domain = st.lookup, st.domain
        hits_again = st.iommu.iotlb.hits_again  # type: ignore[attr-defined]
        for run in runs:
            offset, length, iova = run[0], run[1], run[2]
            if offset >= n:
                break
            lookup(domain, iova)
            if min(length, n - offset) > 1:
                hits_again(domain, iova, min(length, n - offset) - 1)

    def _draw(self, n: int, slots: int) -> list[int]:
        """The next ``n`` random slots of the stream, in the order ``take`` uses them."""
        st = self.stream
        drawn = st.cursor.drawn
        out = []
        while drawn and len(out) < n:
            out.append(drawn.pop())
        rng = st.device._rng
        out.extend(rng.randrange(slots) for _ in range(n - len(out)))
        return out

    def _undraw(self, slots: list[int]) -> None:
        """Slots drawn for requests that were not issued: ``take`` uses them first."""
        cursor = self.stream.cursor
        if cursor.drawn is None:
            cursor.drawn = []
        cursor.drawn.extend(reversed(slots))

    def _drop_passed_wakes(self) -> None:
        """The pipeline's wakes for entries it moved are now behind the clock, all at
        the front of SimPy's queue (everything else lies past the run): drop them
        before SimPy could process one."""
        pipeline = self.stream.pipeline
        queue, now = pipeline.env._queue, pipeline.env._now
        while queue and queue[0][0] < now:
            event = queue[0][3]
            assert event.__class__ is Wake and event.owner is pipeline
            heappop(queue)
            heappop(pipeline._wakes)


def _runs(iovas: list[int]) -> list[list[int]]:
    """Random requests as runs on one 4K page (see ``HitRuns._sequential_runs``); a run
    of more than one keeps its IOVAs (step -1: they need not be evenly spaced)."""
    runs: list[list[int]] = []
    k, n = 0, len(iovas)
    while k < n:
        page, j = iovas[k] >> 12, k + 1
        while j < n and iovas[j] >> 12 == page:
            j += 1
        runs.append([k, j - k, iovas[k], -1, 0, *iovas[k + 1:j]])
        k = j
    return runs


def _requests(runs: list[list[int]], lo: int, hi: int) -> list[tuple[int, int, int]]:
    """(offset, iova, pa) of the requests at offsets ``lo .. hi`` of usable runs."""
    out = []
    for run in runs:
        offset, length, first, step = run[0], run[1], run[2], run[3]
        if offset >= hi:
            break
        if offset + length <= lo:
            continue
        base = run[4] - (first & 0xFFF)
        for k in range(max(lo, offset), min(hi, offset + length)):
            iova = first + (k - offset) * step if step >= 0 else (
                first if k == offset else run[5 + k - offset - 1])
            out.append((k, iova, base + (iova & 0xFFF)))
    return out
