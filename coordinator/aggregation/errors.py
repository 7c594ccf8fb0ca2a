"""The one exception of the aggregation package."""

from __future__ import annotations


class AggregationError(ValueError):
    """A local fault: the caller asked for something the aggregation core cannot do.

    Raised for an unknown aggregator, empty or out-of-range rows, rows never written,
    bad weights, bad knobs, or an update that does not fit the stack. The message names
    the problem; nothing in the stack has changed when it is raised.
    """
