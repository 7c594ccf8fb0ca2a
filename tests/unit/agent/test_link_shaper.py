"""The token bucket behind ``edge-agent run --link``: rates parse, sends average the rate."""

from __future__ import annotations

import pytest

from edge_agent.link_shaper import TokenBucket, parse_rate


@pytest.mark.parametrize(
    ("text", "bytes_per_s"),
    [
        ("2mbit", 250_000.0),
        ("500kbit", 62_500.0),
        ("1gbit", 125e6),
        ("8bit", 1.0),
        (" 1.5Mbit ", 187_500.0),
    ],
)
def test_rates_parse_as_tc_writes_them(text: str, bytes_per_s: float) -> None:
    assert parse_rate(text) == pytest.approx(bytes_per_s)


@pytest.mark.parametrize("text", ["2mbyte", "fast", "0mbit", "-1kbit", ""])
def test_a_bad_rate_is_refused_with_the_reason(text: str) -> None:
    with pytest.raises(ValueError, match="link rate"):
        parse_rate(text)


def test_a_burst_passes_at_once_and_a_large_send_waits_its_size() -> None:
    bucket = TokenBucket(1000.0, burst_bytes=100.0)
    assert bucket.reserve(100, now=0.0) == 0.0
    assert bucket.reserve(500, now=0.0) == pytest.approx(0.5)


def test_back_to_back_sends_average_the_rate() -> None:
    bucket = TokenBucket(1000.0, burst_bytes=10.0)
    now = 0.0
    for _ in range(20):
        now += bucket.reserve(100, now)  # the caller sleeps what it is told, then sends again
    # 2,000 bytes at 1,000 B/s: 2 s, less the initial burst's 10 ms.
    assert now == pytest.approx(1.99)


def test_idle_time_refills_only_up_to_the_burst() -> None:
    bucket = TokenBucket(1000.0, burst_bytes=100.0)
    bucket.reserve(100, now=0.0)
    # An hour idle buys no more than one burst: the next 1,100 bytes wait for 1,000.
    assert bucket.reserve(1100, now=3600.0) == pytest.approx(1.0)


def test_bad_bucket_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0.0)
    with pytest.raises(ValueError, match="nbytes"):
        TokenBucket(10.0).reserve(-1, now=0.0)
