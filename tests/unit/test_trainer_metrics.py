"""The trainer's /metrics: valid Prometheus text from its own registry, typed and escaped."""

from __future__ import annotations

import urllib.request

from kubeforge_trainer.progress import ProgressReporter
from prometheus_client.parser import text_string_to_metric_families


def families(reporter: ProgressReporter) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    body, _ = reporter.prometheus()
    return {f.name: {tuple(sorted(s.labels.items())): s.value for s in f.samples}
            for f in text_string_to_metric_families(body.decode())}


def test_progress_is_typed_and_per_reporter() -> None:
    a, b = ProgressReporter(None, None), ProgressReporter(None, None)
    a.update(step=3, total_steps=10, epoch=1, loss=0.25, samples_per_second=99.5,
             eval={"accuracy": 0.9, "evalLoss": 1.0})  # metric names are bounded by the progress contract
    got = families(a)
    assert got["kubeforge_trainer_step"] == {(): 3.0} and got["kubeforge_trainer_total_steps"] == {(): 10.0}
    assert got["kubeforge_trainer_loss"] == {(): 0.25}
    assert got["kubeforge_trainer_eval"] == {(("metric", "accuracy"),): 0.9, (("metric", "evalLoss"),): 1.0}
    assert b"# TYPE kubeforge_trainer_step gauge" in a.prometheus()[0]
    other = families(b)  # a second reporter has its own registry: nothing of a's leaks into it
    assert other["kubeforge_trainer_step"] == {(): 0.0} and "kubeforge_trainer_loss" not in other


def test_metrics_endpoint_negotiates_openmetrics() -> None:
    r = ProgressReporter(None, 0)
    try:
        url = f"http://127.0.0.1:{r.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            assert b"kubeforge_trainer_step 0.0" in resp.read()
        req = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            assert resp.read().rstrip().endswith(b"# EOF")
    finally:
        r.close()
