"""When a task's round began for an agent: the model's download counts when it came with
the task, not when it was the retained one or fetched before the agent's last task ended."""

from __future__ import annotations

from edge_agent.model_arrivals import MODEL_THEN_TASK_SECONDS, ModelArrivals


def test_download_is_timed_from_its_first_piece_to_completion() -> None:
    arrivals = ModelArrivals()
    assert arrivals.piece("job", 10.0, 100) == (10.0, 100)
    assert arrivals.piece("job", 11.0, 50) == (10.0, 150)
    assert arrivals.fetched("job", version=3, at=12.5) == (150, 2.5)
    # A second completion without new pieces measured nothing.
    assert arrivals.fetched("job", version=3, at=13.0) is None


def test_a_dropped_download_starts_over() -> None:
    arrivals = ModelArrivals()
    arrivals.piece("job", 1.0, 100)
    arrivals.dropped("job")
    arrivals.piece("job", 5.0, 10)
    assert arrivals.fetched("job", version=1, at=6.0) == (10, 1.0)


def test_jobs_are_timed_apart() -> None:
    arrivals = ModelArrivals()
    arrivals.piece("a", 1.0, 10)
    arrivals.piece("b", 2.0, 20)
    assert arrivals.fetched("b", version=1, at=3.0) == (20, 1.0)
    assert arrivals.fetched("a", version=1, at=4.0) == (10, 3.0)


def test_a_task_right_behind_its_model_starts_the_round_at_the_model() -> None:
    arrivals = ModelArrivals()
    arrivals.idle(0.0)
    arrivals.piece("job", 10.0, 100)
    arrivals.fetched("job", version=2, at=14.0)
    assert arrivals.round_start("job", 2, received=14.0 + MODEL_THEN_TASK_SECONDS / 2) == 10.0


def test_a_task_long_after_its_model_starts_at_its_receipt() -> None:
    arrivals = ModelArrivals()
    arrivals.piece("job", 10.0, 100)
    arrivals.fetched("job", version=2, at=14.0)
    late = 14.0 + 2 * MODEL_THEN_TASK_SECONDS
    assert arrivals.round_start("job", 2, received=late) == late


def test_another_version_or_a_model_fetched_before_the_last_task_ended_does_not_count() -> None:
    arrivals = ModelArrivals()
    arrivals.piece("job", 10.0, 100)
    arrivals.fetched("job", version=2, at=14.0)
    assert arrivals.round_start("job", 3, received=14.5) == 14.5
    arrivals.idle(12.0)  # the previous task ended while this model was arriving
    assert arrivals.round_start("job", 2, received=14.5) == 14.5
    assert arrivals.round_start("other", 2, received=14.5) == 14.5
