"""Same choice lists with --jobs 2 as with --jobs 1; random and pct are functions of
their seed; the pct bound is printed."""

from __future__ import annotations

import json
from pathlib import Path

SHARED = "shared-level-flush"


def explored(folder: str) -> list[dict]:
    return [json.loads(ln) for ln in (Path(folder) / "explored.jsonl").read_text().splitlines()]


def lists(folder: str) -> list[tuple]:
    return [tuple(map(tuple, r["deviations"])) for r in explored(folder)]


def test_jobs_2_explores_the_same_choice_lists_as_jobs_1(cli) -> None:
    common = ("explore", SHARED, "--stop-after", "0", "--quiet")
    one = cli(*common, "--jobs", "1", "--out", "j1")
    two = cli(*common, "--jobs", "2", "--out", "j2")
    assert one.code == two.code == 1
    assert lists("j1") == lists("j2")  # the same lists, in the same order
    assert len(set(lists("j1"))) == len(lists("j1")) > 50  # each list once
    assert explored("j1") == explored("j2")  # and the same outcomes
    assert one.out.replace("jobs 1", "jobs 2").replace("j1/", "j2/") == two.out


def test_jobs_2_stops_at_the_same_failure(cli) -> None:
    one = cli("explore", SHARED, "--jobs", "1", "--out", "s1", "--quiet")
    two = cli("explore", SHARED, "--jobs", "2", "--out", "s2", "--quiet")
    assert one.code == two.code == 1
    assert lists("s1") == lists("s2")
    assert explored("s1")[-1]["failures"] == ["visibility", "expect:dma.faults"]


def test_jobs_2_random_and_pct(cli) -> None:
    for strategy in ("random", "pct"):
        common = ("explore", SHARED, "--strategy", strategy, "--runs", "40",
                  "--stop-after", "0", "--quiet", "--set", "kernel.fixes.flush_done_sw_bit=true")
        cli(*common, "--jobs", "1", "--out", f"{strategy}1")
        cli(*common, "--jobs", "2", "--out", f"{strategy}2")
        assert explored(f"{strategy}1") == explored(f"{strategy}2")


def test_random_and_pct_are_determined_by_their_seed(cli) -> None:
    for strategy in ("random", "pct"):
        runs = {}
        for seed, out in ((1, "a"), (1, "b"), (2, "c")):
            res = cli("explore", SHARED, "--strategy", strategy, "--runs", "30", "--seed", seed,
                      "--stop-after", "0", "--quiet", "--out", f"{strategy}-{out}")
            assert res.code in (0, 1)
            runs[out] = explored(f"{strategy}-{out}")
        assert runs["a"] == runs["b"]
        assert [r["deviations"] for r in runs["a"]] != [r["deviations"] for r in runs["c"]]
        # every run but the FIFO one deviates somewhere
        assert all(r["deviations"] for r in runs["a"][1:]), strategy


def test_pct_prints_its_probability_bound(cli) -> None:
    res = cli("explore", SHARED, "--strategy", "pct", "--depth", "3", "--runs", "20",
              "--set", "kernel.fixes.flush_done_sw_bit=true", "--out", "p")
    assert res.code == 0, res.out
    summary = json.loads(Path("p/explore.json").read_text())
    k = summary["choice_points"]
    n = 4  # two CPUs, two devices
    assert summary["pct_bound"] == 1 / (n * k**2)
    assert f"1/({n}*{k}^2)" in res.out
    assert "0 failures in 19 pct runs" in res.out
    assert "runs explored: 20" in res.out


def test_dfs_with_a_bound_of_two(cli) -> None:
    # Every list with at most two deviations, fewest first: the lists with two extend
    # those with one after their deviation, so none repeats.
    res = cli("explore", "short-gather", "--bound", "2", "--stop-after", "0",
              "--set", "kernel.fixes.gather_unmapped_length=true", "--out", "b2", "--quiet")
    assert res.code == 0, res.out
    assert "bounded space exhausted: yes" in res.out
    got = lists("b2")
    assert len(set(got)) == len(got)
    assert [len(d) for d in got] == sorted(len(d) for d in got)
    assert max(len(d) for d in got) == 2
    ones = [d for d in got if len(d) == 1]
    assert len(ones) == sum(n - 1 for n in choice_options("b2"))


def choice_options(folder: str) -> list[int]:
    """The options of each choice point of the FIFO run (from a saved summary)."""
    first = explored(folder)[0]
    assert first["deviations"] == []
    # every single-deviation list is (index, option): count per index
    singles = [r["deviations"][0] for r in explored(folder) if len(r["deviations"]) == 1]
    per_index: dict[int, int] = {}
    for index, option in singles:
        per_index[index] = max(per_index.get(index, 1), option + 1)
    assert len(per_index) == first["choice_points"]
    return list(per_index.values())
