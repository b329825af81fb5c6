"""The kubelet's `/metrics/resource` endpoint in Prometheus text: node and per-container CPU
seconds and working-set bytes (what metrics-server scrapes for `kubectl top` and the HPA). The
node's numbers come from /proc (the whole machine is the node); containers' from their cgroups."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LABELS = ["container", "pod", "namespace"]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class ContainerSample:
    container: str
    pod: str
    namespace: str
    cpu_seconds: float
    working_set_bytes: int
    start_time: float


def node_cpu_seconds(stat: str | None = None) -> float:
    """CPU time the machine spent busy (everything but idle and iowait), from /proc/stat."""
    text = stat if stat is not None else Path("/proc/stat").read_text()
    fields = [int(v) for v in text.splitlines()[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user..steal minus idle and iowait; guest is within user
    return busy / os.sysconf("SC_CLK_TCK")


def node_working_set_bytes(meminfo: str | None = None) -> int:
    text = meminfo if meminfo is not None else Path("/proc/meminfo").read_text()
    values = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in text.splitlines() if line.split()}
    return values["MemTotal"] - values.get("MemAvailable", values.get("MemFree", 0))


class _Collector(Collector):
    def __init__(self, containers: Iterable[ContainerSample], at: float) -> None:
        self.containers = list(containers)
        self.at = at

    def collect(self) -> Iterator[Metric]:
        t = self.at
        node_cpu = CounterMetricFamily("node_cpu_usage_seconds", "Cumulative cpu time consumed by the node")
        node_cpu.add_metric([], node_cpu_seconds(), timestamp=t)
        node_mem = GaugeMetricFamily("node_memory_working_set_bytes", "Current working set of the node")
        node_mem.add_metric([], node_working_set_bytes(), timestamp=t)
        cpu = CounterMetricFamily("container_cpu_usage_seconds", "Cumulative cpu time consumed by the container",
                                  labels=LABELS)
        mem = GaugeMetricFamily("container_memory_working_set_bytes", "Current working set of the container",
                                labels=LABELS)
        start = GaugeMetricFamily("container_start_time_seconds", "Start time of the container", labels=LABELS)
        for c in self.containers:
            labels = [c.container, c.pod, c.namespace]
            cpu.add_metric(labels, c.cpu_seconds, timestamp=t)
            mem.add_metric(labels, c.working_set_bytes, timestamp=t)
            start.add_metric(labels, c.start_time)
        yield from (node_cpu, node_mem, cpu, mem, start)


def render(containers: Iterable[ContainerSample]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(containers, time.time()))
    return generate_latest(registry)
