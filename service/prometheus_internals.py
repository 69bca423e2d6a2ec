"""The one place that reaches into prometheus-client's metric objects.

service/metrics.py adds requests up in memory and writes them once per event-loop
iteration, straight into the values prometheus-client's own `inc()`/`observe()`
write to (tests/unit/test_request_cost.py checks the result is the same). Those
values are private attributes: they are read here only, for the versions this was
written against. This module imports nothing of prometheus-client itself, so the
launcher can check the version before the library picks its storage mode.
"""

from __future__ import annotations

from typing import Any

from service.versions import require

require("prometheus-client", ">=0.26,<0.27", "service/prometheus_internals.py (the values behind a metric)")


def counter_value(counter: Any) -> Any:
    """The value a labelled Counter's `inc()` writes to."""
    return counter._value


def gauge_value(gauge: Any) -> Any:
    """The value a labelled Gauge's `inc()`/`dec()` write to."""
    return gauge._value


def histogram_parts(histogram: Any) -> tuple[Any, list[Any], list[float]]:
    """A labelled Histogram's sum, its bucket values and their upper bounds (ascending, the last +Inf)."""
    return histogram._sum, histogram._buckets, histogram._upper_bounds
