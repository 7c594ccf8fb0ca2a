"""coordinator.report: extraction from synthetic event lists, and the files it renders."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from coordinator.report import (
    ReportError,
    Run,
    Summary,
    describe,
    find_run_dirs,
    group_runs,
    load_runs,
    main,
    markdown_summary,
    order_groups,
    parse_run,
    rank_band,
    report_clock,
    rolling_mean,
    round_band,
    smoothing_window,
    speedup,
    step_band,
    summarize,
    summary_table,
    time_to_target,
    time_unit,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
START = 1_700_000_000.0


def _event(
    name: str, round_: int, ts: float, vt: float | None, data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "job": "job",
        "event": name,
        "round": round_,
        "ts": ts,
        "virtual_time": vt,
        "data": data,
    }


def synthetic_events(
    accuracies: Sequence[float | None],
    *,
    selector: str = "random",
    adaptive: bool = False,
    clock: str = "virtual",
    round_s: float = 100.0,
    wall_round_s: float = 2.0,
    agents: int = 10,
    per_round: int = 3,
    failed: Sequence[int] = (),
    update_bytes: int = 1_000_000,
) -> list[dict[str, Any]]:
    """A job's log: round r ends at virtual r*round_s (wall START + 5 + r*wall_round_s);
    accuracies[r-1] is its test accuracy (None: not evaluated); agents kept round-robin."""
    config = {
        "name": "job",
        "selector": {"name": selector, "seed": 1},
        "adaptive_training": adaptive,
        "clock": clock,
    }
    virtual = clock == "virtual"
    events = [
        _event("JOB_BEGIN", 0, START, None, {"config": config, "num_params": 100}),
        _event("AGENTS_READY", 0, START + 5, None, {"online": agents}),
    ]
    for r, accuracy in enumerate(accuracies, start=1):
        ts, vt = START + 5 + r * wall_round_s, r * round_s if virtual else None
        selected = [f"a{(r * per_round + i) % agents}" for i in range(per_round + 1)]
        kept = selected[:per_round]
        ok = r not in failed
        begin = {"selected": selected, "dispatched": selected, "online": agents}
        events.append(_event("ROUND_BEGIN", r, ts - wall_round_s, vt and vt - round_s, begin))
        if ok and accuracy is not None:
            events.append(_event("TEST_RESULT", r, ts, vt, {"accuracy": accuracy, "loss": 1.0}))
        end = {
            "round": r,
            "ok": ok,
            "selected": selected,
            "kept": kept if ok else [],
            "stragglers": selected[per_round:] if ok else selected,
            "duration": wall_round_s,
            "virtual_duration": round_s if virtual else None,
            "accuracy": accuracy if ok else None,
            "upload_bytes": update_bytes * per_round if ok else 0,
            "upload_bytes_all": update_bytes * len(selected) if ok else 0,
        }
        events.append(_event("ROUND_END" if ok else "ROUND_FAILED", r, ts, vt, end))
    events.append(_event("JOB_END", len(accuracies), events[-1]["ts"], None, {}))
    return events


def run_of(accuracies: Sequence[float | None], name: str = "run", **kwargs: Any) -> Run:
    return parse_run(synthetic_events(accuracies, **kwargs), name)


# -- parsing --------------------------------------------------------------------------------------


def test_parse_reads_rounds_accuracy_and_label() -> None:
    run = run_of([0.5, None, 0.8], selector="oort", adaptive=True)

    assert run.label() == "oort+adaptive"
    assert run.label("dir") == "run" and run.label("job") == "job"
    assert run.virtual
    assert [p.round for p in run.accuracy] == [1, 3]
    assert [rec.round for rec in run.rounds] == [1, 2, 3]
    assert run.rounds[2].virtual_time == 300.0 and run.rounds[2].wall_time == 11.0
    assert run.rounds[0].upload_bytes == 3_000_000 and run.rounds[0].upload_bytes_all == 4_000_000


def test_parse_reads_from_the_last_job_begin_and_counts_re_emitted_rounds_once() -> None:
    old = synthetic_events([0.1, 0.2, 0.3, 0.4])
    new = synthetic_events([0.5, 0.6])
    events = old + new[:-1] + [new[-2]] + new[-1:]  # round 2's ROUND_END re-emitted on resume

    run = parse_run(events, "run")

    assert [rec.round for rec in run.rounds] == [1, 2]
    assert [p.accuracy for p in run.accuracy] == [0.5, 0.6]


def test_participation_counts_kept_rounds_and_agents_never_kept() -> None:
    # 10 agents online, 2 rounds of 3 kept: 6 agents kept once, 4 never.
    run = run_of([0.5, 0.6], agents=10, per_round=3)

    assert run.participation == (1, 1, 1, 1, 1, 1, 0, 0, 0, 0)


def test_failed_rounds_count_as_rounds_and_keep_nobody() -> None:
    run = run_of([0.5, 0.6, 0.7], failed=[2])

    assert [rec.ok for rec in run.rounds] == [True, False, True]
    assert [p.round for p in run.accuracy] == [1, 3]
    assert sum(run.participation) == 6


def test_a_log_without_job_begin_is_an_error() -> None:
    with pytest.raises(ReportError, match="no JOB_BEGIN"):
        parse_run(synthetic_events([0.5])[1:], "broken")


# -- time to target -------------------------------------------------------------------------------


def test_time_to_target_on_the_virtual_clock() -> None:
    run = run_of([0.5, 0.7, 0.85, 0.9], round_s=100.0)

    assert time_to_target(run, 0.8, "virtual") == 300.0
    assert time_to_target(run, 0.85, "virtual") == 300.0  # >= counts
    assert time_to_target(run, 0.5, "virtual") == 100.0


def test_time_to_target_on_the_wall_clock_is_since_job_begin() -> None:
    run = run_of([0.5, 0.7, 0.85], clock="wall", wall_round_s=2.0)

    assert not run.virtual
    assert report_clock([run]) == "wall"
    # Round 3 ends 5 s (waiting for agents) + 3 * 2 s after JOB_BEGIN.
    assert time_to_target(run, 0.8, "wall") == 11.0


def test_time_to_target_not_reached() -> None:
    assert time_to_target(run_of([0.5, 0.6]), 0.9, "virtual") is None


def test_one_wall_clock_run_puts_the_whole_report_on_the_wall_clock() -> None:
    virtual, wall = run_of([0.9]), run_of([0.9], clock="wall")

    assert report_clock([virtual]) == "virtual"
    assert report_clock([virtual, wall]) == "wall"
    assert time_to_target(virtual, 0.8, "wall") == 7.0


# -- grouping and the summary ---------------------------------------------------------------------


def test_runs_with_one_label_form_a_group() -> None:
    runs = [
        run_of([0.5], "oort-s1", selector="oort"),
        run_of([0.5], "random-s1"),
        run_of([0.5], "oort-s2", selector="oort"),
        run_of([0.5], "oort-ad", selector="oort", adaptive=True),
    ]

    groups = group_runs(runs)

    assert [(g.label, [r.name for r in g.runs]) for g in groups] == [
        ("oort", ["oort-s1", "oort-s2"]),
        ("oort+adaptive", ["oort-ad"]),
        ("random", ["random-s1"]),
    ]
    assert [g.label for g in group_runs(runs, "dir")] == [
        "oort-ad",
        "oort-s1",
        "oort-s2",
        "random-s1",
    ]


def test_speedup_is_baseline_time_over_label_time() -> None:
    assert speedup(400.0, 200.0) == 2.0
    assert speedup(None, 200.0) is None
    assert speedup(400.0, None) is None


def test_summary_medians_over_seeds_and_speedup_against_the_baseline() -> None:
    random_runs = [run_of([0.5, 0.6, 0.7, 0.8], f"r{i}") for i in range(2)]  # 400 s each
    oort_runs = [
        run_of([0.6, 0.8], "o1", selector="oort"),  # 200 s
        run_of([0.6, 0.7, 0.8], "o2", selector="oort"),  # 300 s
        run_of([0.6, 0.7, 0.7], "o3", selector="oort"),  # never
    ]
    groups = group_runs(random_runs + oort_runs)

    rows = {row.label: row for row in summarize(groups, "virtual", 0.8, "random")}

    assert rows["random"].time_to_target == 400.0 and rows["random"].speedup == 1.0
    # Not reached counts as +inf, so the median of (200, 300, never) is 300.
    assert rows["oort"].time_to_target == 300.0
    assert rows["oort"].reached == 2 and rows["oort"].runs == 3
    assert rows["oort"].speedup == pytest.approx(400.0 / 300.0)
    assert rows["oort"].final_accuracy == 0.8
    assert rows["oort"].rounds == 3
    assert rows["oort"].mean_round_duration == 100.0
    assert rows["random"].upload_mb == 12.0 and rows["random"].upload_mb_all == 16.0


def test_a_median_that_did_not_reach_the_target_reads_not_reached() -> None:
    groups = group_runs(
        [
            run_of([0.9], "r1"),
            run_of([0.9], "o1", selector="oort"),
            run_of([0.5], "o2", selector="oort"),
        ]
    )

    rows = {row.label: row for row in summarize(groups, "virtual", 0.8, "random")}

    assert rows["oort"].time_to_target is None and rows["oort"].speedup is None
    _, cells = summary_table(Summary(tuple(rows.values()), 0.8, "random", ""))
    assert cells[0][0] == "oort"
    assert cells[0][2] == "not reached (1/2 runs did)"
    assert cells[0][-1] == "—"


def test_no_baseline_among_the_labels_gives_no_speedup() -> None:
    groups = group_runs([run_of([0.9], selector="oort")])

    (row,) = summarize(groups, "virtual", 0.8, None)

    assert row.speedup is None and row.time_to_target == 100.0


def test_markdown_summary_is_a_table_with_one_row_per_label() -> None:
    groups = group_runs([run_of([0.9], "r"), run_of([0.7, 0.95], "o", selector="oort")])

    rows = tuple(summarize(groups, "virtual", 0.9, "random"))

    text = markdown_summary(Summary(rows, 0.9, "random", "2 runs."))
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[0].startswith("| label | runs | time to 90% (min) | final accuracy |")
    assert "| mean round (s) |" in table[0]
    assert len(table) == 4
    assert "| oort | 1 | 3.33 | 95.0% | 2 | 100 | 6.00 / 8.00 | 0.50× |" in text
    assert "| random | 1 | 1.67 | 90.0% | 1 | 100 | 3.00 / 4.00 | 1.00× |" in text


def test_a_column_of_times_shares_one_unit_chosen_by_its_largest() -> None:
    assert time_unit([30.0, None, 90.0]) == (1.0, "s")
    assert time_unit([30.0, 600.0]) == (60.0, "min")
    assert time_unit([30.0, 3 * 3600.0]) == (3600.0, "h")
    assert time_unit([None]) == (1.0, "s")


def test_the_intro_says_what_went_in_and_how_to_read_it() -> None:
    runs = [run_of([0.9], "r1"), run_of([0.9], "r2", clock="wall")]
    groups = group_runs(runs)

    text = describe(runs, groups, "wall", 0.8, None, ["runs/sweep"])

    assert text.startswith("2 runs in 1 group from runs/sweep; times on the wall clock")
    assert "target accuracy 80%" in text and "without a baseline label (--baseline)" in text


# -- bands ----------------------------------------------------------------------------------------


def test_step_band_holds_each_curve_and_starts_where_all_have_begun() -> None:
    band = step_band([[(1.0, 0.2), (3.0, 0.6)], [(2.0, 0.4), (4.0, 0.8)]])

    assert band.x == (2.0, 3.0, 4.0)
    assert band.low == (0.2, 0.4, 0.6)  # the first curve holds 0.6 after its end
    assert band.high == (0.4, 0.6, 0.8)
    assert band.median == pytest.approx((0.3, 0.5, 0.7))


def test_round_band_uses_the_runs_that_have_the_round() -> None:
    band = round_band([{1: 1.0, 2: 3.0}, {1: 2.0}])

    assert band.x == (1.0, 2.0)
    assert band.median == (1.5, 3.0)


def test_many_rounds_are_smoothed_with_an_odd_centred_window() -> None:
    assert smoothing_window(40) == 1
    assert smoothing_window(120) == 7 and smoothing_window(500) == 25
    assert rolling_mean([0.0, 3.0, 6.0, 9.0], 3) == (1.5, 3.0, 6.0, 7.5)


def test_rank_band_puts_populations_of_any_size_on_a_percent_axis() -> None:
    band = rank_band([(4, 2, 0, 0), (2, 0)], points=5)

    assert band.x == (0.0, 25.0, 50.0, 75.0, 100.0)
    assert band.high == (4, 2, 0, 0, 0)
    assert band.low == (2, 2, 0, 0, 0)


# -- files ----------------------------------------------------------------------------------------


def _write_run(directory: Path, events: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True)
    lines = "".join(json.dumps(e) + "\n" for e in events)
    (directory / "events.jsonl").write_text(lines + '{"torn', encoding="utf-8")
    return directory


def test_renders_every_plot_and_the_summary_from_two_run_dirs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    _write_run(runs / "random-s1", synthetic_events([0.3, 0.5, 0.7, 0.85, 0.9], agents=40))
    _write_run(
        runs / "oort-s1",
        synthetic_events([0.4, 0.7, 0.9, 0.92, 0.93], selector="oort", agents=40, failed=[2]),
    )
    out = tmp_path / "report"

    status = main(
        [str(runs / "random-s1"), str(runs / "oort-s1"), "--out", str(out), "--target", "0.8"]
    )

    assert status == 0
    for name in (
        "accuracy_vs_time.png",
        "accuracy_vs_round.png",
        "round_duration.png",
        "upload_bytes.png",
        "participation.png",
    ):
        data = (out / name).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), name
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "| time to 80% (min) |" in summary
    assert "| random | 1 | 6.67 | 90.0% | 5 |" in summary
    assert "| oort | 1 | 5.00 | 93.0% | 5 (1 failed) |" in summary and "1.33×" in summary
    assert "speed-up vs random" in capsys.readouterr().out


def test_a_directory_of_run_dirs_is_read_one_level_down(tmp_path: Path) -> None:
    runs = tmp_path / "sweep"
    for seed in (1, 2):
        _write_run(runs / f"oort-s{seed}", synthetic_events([0.5, 0.9], selector="oort"))
    _write_run(runs / "random-s1", synthetic_events([0.5, 0.7, 0.9], clock="wall"))
    (runs / "notes").mkdir()

    dirs = find_run_dirs([runs, runs / "oort-s1"])
    groups = order_groups(group_runs(load_runs(dirs)), "random")

    assert [d.name for d in dirs] == ["oort-s1", "oort-s2", "random-s1"]  # each once
    assert [(g.label, len(g.runs)) for g in groups] == [("random", 1), ("oort", 2)]
    assert report_clock(r for g in groups for r in g.runs) == "wall"  # random-s1 has no virtual


def test_errors_name_the_path_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _write_run(tmp_path / "r", synthetic_events([0.9]))

    assert main([str(empty), "--out", str(tmp_path / "out")]) == 1
    assert f"{empty}: no events.jsonl" in capsys.readouterr().err
    assert main([str(tmp_path / "r"), "--baseline", "oort", "--out", str(tmp_path / "o")]) == 1
    assert "--baseline 'oort' is not a label of these runs: random" in capsys.readouterr().err


def test_target_must_be_a_fraction(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["runs", "--target", "80"])

    assert exc.value.code == 2
    assert "0.8 for 80%" in capsys.readouterr().err
