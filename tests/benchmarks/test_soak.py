"""The soak tier at its ``--quick`` size (``make soak`` runs the full one): every oracle on,
every fix on, no violation; and the soak's judge can fail (a fix off is detected)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ is not installed
from benchmarks import soak


def test_quick_soak_every_fix_on_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert soak.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "violations: none" in out
    total = next(ln for ln in out.splitlines() if ln.strip().startswith("total")).split()
    ops, dmas = (int(x.replace(",", "")) for x in total[1:3])
    assert ops >= 2_000 and dmas >= 20_000  # the quick size was really done
    assert "peak RSS:" in out and "ops/s" in out and "DMAs/s" in out


def test_a_fix_off_is_detected(capsys: pytest.CaptureFixture[str]) -> None:
    """The shared-level install race (the rendezvous rounds make it happen)."""
    rc = soak.main(["--ops", "600", "--dmas", "6000", "--fix-off", "flush_done_sw_bit",
                    "--stop-early"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "violation invisible_map" in out or "violation fault_on_mapped" in out, out


def test_every_fix_switch_is_exercised_by_a_segment() -> None:
    exercised = {fix for seg in soak.SEGMENTS for fix in seg.exercises}
    assert exercised == set(soak.FIXES)
