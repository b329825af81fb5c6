"""Pure: one server's load, read from the body its /metrics answered, trusting nothing in it. Only the
lines of the one gauge the autoscaler needs are parsed (with prometheus_client's parser), and the value
must be the served model's, once, finite and within what a server can report; anything else is a
problem in words for a Warning Event, and that server is left out of the average."""

from __future__ import annotations

import math
from typing import Final

from kubeforge_api.servingjob import AutoscalingMetric
from prometheus_client.parser import text_string_to_metric_families

GAUGES: Final = {
    AutoscalingMetric.WAITING_REQUESTS: "kubeforge:num_requests_waiting",
    AutoscalingMetric.KV_CACHE_USAGE: "kubeforge:kv_cache_usage_perc",
}
# The most a server can honestly report: its waiting queue's bound, and the whole cache.
LIMITS: Final = {AutoscalingMetric.WAITING_REQUESTS: 1_000_000.0, AutoscalingMetric.KV_CACHE_USAGE: 1.0}
MAX_SERIES_LINES: Final = 16  # lines of the gauge considered; a server has one series per model


def gauge_lines(text: str, name: str) -> list[str]:
    """The sample lines of metric `name` (not of metrics whose names merely start with it)."""
    return [line for line in text.splitlines() if line.startswith(name) and line[len(name):len(name) + 1] in "{ "]


def _samples(lines: list[str], name: str, model_name: str) -> list[float] | str:
    try:
        families = list(text_string_to_metric_families("\n".join(lines) + "\n"))
    except (ValueError, IndexError, KeyError, TypeError):
        return f"answered {name} in a form that does not parse as Prometheus text"
    return [float(s.value) for f in families for s in f.samples
            if s.name == name and s.labels.get("model_name") == model_name]


def judge_load(body: bytes, metric: AutoscalingMetric, model_name: str) -> float | str:
    """The server's value of `metric`'s gauge for `model_name`, or what is wrong with its answer."""
    name = GAUGES[metric]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "answered metrics that are not UTF-8 text"
    lines = gauge_lines(text, name)
    if len(lines) > MAX_SERIES_LINES:
        return f"answered {len(lines)} lines of {name}; a server has one per model"
    values = _samples(lines, name, model_name)
    if isinstance(values, str):
        return values
    if not values:
        return f"does not report {name} for model {model_name!r} (is the model a causal language model?)"
    if len(values) > 1:
        return f"reports {name} for model {model_name!r} {len(values)} times"
    value = values[0]
    if not math.isfinite(value) or value < 0 or value > LIMITS[metric]:
        return f"reports {name} = {value!r}, which no server can"
    return value
