"""The node agent's `/metrics/resource` speaks the kubelet's format (what metrics-server decodes):
series names, the container/pod/namespace labels, millisecond timestamps; node numbers from /proc."""

from __future__ import annotations

import os

import pytest
from minicluster.resourcemetrics import ContainerSample, node_cpu_seconds, node_working_set_bytes, render
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.embedded("self-tests of the embedded cluster's node agent")

STAT = "cpu  100 20 30 1000 50 5 5 10 7 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n"
MEMINFO = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n"


def test_node_numbers_count_busy_time_and_memory_in_use() -> None:
    assert abs(node_cpu_seconds(STAT) - 170 / os.sysconf("SC_CLK_TCK")) < 1e-9  # no idle, iowait or guest
    assert node_working_set_bytes(MEMINFO) == 600 * 1024


def test_series_names_labels_and_timestamps_are_the_kubelets() -> None:
    text = render([ContainerSample("c", "p", "ns", 12.5, 4096, 1_700_000_000.0)]).decode()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    names = {line.split("{")[0].split(" ")[0] for line in lines}
    assert names == {"node_cpu_usage_seconds_total", "node_memory_working_set_bytes",
                     "container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
                     "container_start_time_seconds"}
    cpu = next(line for line in lines if line.startswith("container_cpu_usage_seconds_total"))
    labels, value, stamp = cpu.split(" ")
    assert labels == 'container_cpu_usage_seconds_total{container="c",namespace="ns",pod="p"}'
    assert float(value) == 12.5 and len(stamp) == 13  # milliseconds since the epoch
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["container_memory_working_set_bytes"].samples[0].value == 4096
