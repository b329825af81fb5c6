"""The local-runs implementation of `Source`: the run records `kubeforge run` leaves in
`<runs>/<job>-<uid8>/run.json` (`kubeforge_api.contracts.RunRecord`, whose `status` is a
TrainingJob status), shown as TrainingJobs of the pseudo-namespace `local`.

A local run's "pods" are processes whose output went to `logs/<pod>.log`; they have no phase,
node or events, and one log file spans every attempt (there is no separate previous container).
The run folder's name is the job's name here, so two runs of one YAML stay apart; a pod is named
`<folder>/<pod>` for the same reason."""

from __future__ import annotations

import os
from pathlib import Path

from kubeforge_api.constants import LABEL_JOB
from kubeforge_api.contracts import RunRecord
from kubeforge_api.servingjob import ServingJob
from kubeforge_api.trainingjob import TrainingJob
from pydantic import ValidationError

from .kubeobjects import matches
from .source import ErrorKind, EventInfo, Listing, NodeInfo, PodInfo, Queues, Resources, SourceError, Usage

LOCAL_NAMESPACE = "local"
LOG_TAIL_BYTES = 256 * 1024


def _memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def job_of(record: RunRecord, folder: str) -> TrainingJob:
    """A run record as the TrainingJob a cluster would show."""
    return TrainingJob.model_validate({
        "metadata": {"name": folder, "namespace": LOCAL_NAMESPACE, "uid": record.uid,
                     "creationTimestamp": record.start_time, "annotations": {"kubeforge.dev/file": record.file}},
        "spec": record.spec, "status": record.status})


class LocalRunsSource:
    """Reads `run.json` records and log files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def description(self) -> str:
        return f"local runs in {self.root}"

    def _folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if (p / "run.json").is_file())

    def _record(self, folder: Path) -> RunRecord:
        try:
            return RunRecord.model_validate_json((folder / "run.json").read_bytes())
        except (OSError, ValidationError) as e:
            raise SourceError(ErrorKind.UNREADABLE, f"unreadable run record {folder.name}/run.json: {e}") from e

    def namespaces(self) -> list[str]:
        return [LOCAL_NAMESPACE]

    def training_jobs(self, namespaces: tuple[str, ...]) -> Listing[TrainingJob]:
        out: Listing[TrainingJob] = Listing(items=[])
        if namespaces and LOCAL_NAMESPACE not in namespaces:
            return out
        for folder in self._folders():
            try:
                out.items.append(job_of(self._record(folder), folder.name))
            except SourceError as e:
                out.problems.append(e.message)
            except (ValidationError, ValueError) as e:
                out.problems.append(f"run {folder.name}: {str(e).splitlines()[0]}")
        return out

    def serving_jobs(self, namespaces: tuple[str, ...]) -> Listing[ServingJob]:
        return Listing(items=[])

    def training_job(self, namespace: str, name: str) -> TrainingJob:
        folder = self.root / name
        if namespace != LOCAL_NAMESPACE or "/" in name or not (folder / "run.json").is_file():
            raise SourceError(ErrorKind.NOT_FOUND, f"not found: local run {name} in {self.root}")
        try:
            return job_of(self._record(folder), name)
        except (ValidationError, ValueError) as e:
            raise SourceError(ErrorKind.UNREADABLE, f"run {name}: {str(e).splitlines()[0]}") from e

    def serving_job(self, namespace: str, name: str) -> ServingJob:
        raise SourceError(ErrorKind.NOT_FOUND, "local runs have no ServingJobs: serving needs a cluster")

    def pods(self, namespace: str, selector: dict[str, str]) -> list[PodInfo]:
        out = []
        for folder in self._folders():
            for log in sorted((folder / "logs").glob("*.log")):
                pod = PodInfo(namespace=LOCAL_NAMESPACE, name=f"{folder.name}/{log.stem}", phase="Local process",
                              node=os.uname().nodename, labels={LABEL_JOB: folder.name})
                if matches(pod.labels, selector):
                    out.append(pod)
        return out

    def events(self, namespace: str, names: frozenset[str]) -> list[EventInfo]:
        return []

    def logs(self, namespace: str, pod: str, container: str | None, previous: bool, tail: int) -> str:
        if previous:
            return ""
        folder, _, stem = pod.partition("/")
        log = self.root / folder / "logs" / f"{stem}.log"
        if folder and stem and "/" not in stem and ".." not in pod and log.is_file():
            with log.open("rb") as f:
                f.seek(max(log.stat().st_size - LOG_TAIL_BYTES, 0))
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-tail:])
        raise SourceError(ErrorKind.NOT_FOUND, f"not found: no log of local pod {pod}")

    def nodes(self) -> list[NodeInfo]:
        machine = Resources(cpu_m=(os.cpu_count() or 1) * 1000, memory=_memory_bytes())
        return [NodeInfo(name=os.uname().nodename, ready=True, capacity=machine, allocatable=machine)]

    def usage(self, selector: dict[str, str]) -> Usage | None:
        return None  # local processes have no resource metrics API

    def queues(self) -> Queues | None:
        return None  # local runs are not queued
