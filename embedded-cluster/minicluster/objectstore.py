"""An S3-compatible object store for the embedded cluster: SeaweedFS's `weed server` (master, volume
server, filer and S3 gateway in one process; built by `build-seaweedfs.sh`), with one admin
identity whose access and secret keys are random per cluster.

Only the S3 API listens where pods reach it, on the bridge gateway (the host reaches that address
too); the master, volume server and filer listen on the loopback, where only the gateway talks to
them. One copy of everything, small volumes grown one at a time, no telemetry. Its data lives under
the cluster's directory (which `cluster-down.sh` removes unless KEEP_VOLUMES=1), its configuration
and sockets in a second, throwaway directory there, its log in the cluster's logs directory.

Start waits until a signed `list_buckets` answers, the volume server has joined the master and a
write goes through (a probe bucket, deleted again: on a fresh store that takes about ten seconds,
the filer's wait for peers included); stop ends the process group.

For pods: `inClusterEndpoint` of ready.json's `objectStore`, path-style addressing, region us-east-1,
the keys from a Secret (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`)."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubeforge_operator.ports import free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
VOLUME_SIZE_MB = 64  # the floor of SeaweedFS's own small mode; files are sparse (no preallocation)
ACTIONS = ["Admin", "Read", "List", "Tagging", "Write"]
# Soft heap limit and CPUs for the Go runtime: the store serves a dev cluster, not a benchmark.
GO_ENV = {"GOMEMLIMIT": "384MiB", "GOMAXPROCS": "2", "GOGC": "50"}
# master.toml settings through the environment. Grow one volume per collection (a bucket is one)
# rather than seven, so many buckets fit in a small disk. The master's state is rebuilt at every
# start (its folder is named by its port, which changes): the volume server, in the same process,
# reports the volumes it holds before anything can be written (start waits for that), so neither
# the hold on the first volume id (meant for servers elsewhere that report late) nor the freeze on
# a volume server from an earlier master's topology (kept data, KEEP_VOLUMES=1) protects anything.
WEED_ENV = {"WEED_MASTER_VOLUME_GROWTH_COPY_1": "1", "WEED_MASTER_VOLUME_GROWTH_COPY_OTHER": "1",
            "WEED_MASTER_VOLUME_GROWTH_ALLOCATION_DEFERRAL": "0s",
            "WEED_MASTER_VOLUME_GROWTH_FREEZE_ON_TOPOLOGY_MISMATCH": "false"}
LOOPBACK = "127.0.0.1"
STOP_GRACE_SECONDS = 3.0


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str

    @classmethod
    def generate(cls) -> Credentials:
        return cls("KF" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30))


def identities(creds: Credentials) -> dict[str, Any]:
    """The S3 gateway's configuration: one identity that may do everything; anonymous requests are refused."""
    return {"identities": [{"name": "kubeforge-admin", "actions": ACTIONS,
                            "credentials": [{"accessKey": creds.access_key, "secretKey": creds.secret_key}]}]}


log = logging.getLogger("minicluster")


class StoreExited(RuntimeError):
    pass


class ObjectStore:
    """`weed server` as a child process in its own session, serving S3 on `address:port`; its data in
    ROOT/objectstore (`cluster-down.sh` keeps that with KEEP_VOLUMES=1), its configuration and
    sockets in ROOT/objectstore-run."""

    def __init__(self, binary: Path, root: Path, log_dir: Path, address: str, port: int | None = None) -> None:
        self.binary = binary
        self.data_dir = root / "objectstore"
        self.run_dir = root / "objectstore-run"
        self.log_dir = log_dir
        self.address = address
        self.port = port or free_port()
        self._fixed_port = port is not None
        self.creds = Credentials.generate()
        self.proc: subprocess.Popen[bytes] | None = None
        self._master_port = 0
        self._grpc_ports: dict[str, int] = {}
        self._probe_bucket = f"kubeforge-ready-{secrets.token_hex(4)}"
        # stop() may run while start() is still under way in another thread (the cluster failed meanwhile).
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.port}"

    def describe(self) -> dict[str, str]:
        """ready.json's `objectStore`: the host reaches the gateway address as pods do."""
        return {"endpoint": self.endpoint, "inClusterEndpoint": self.endpoint, "accessKey": self.creds.access_key,
                "secretKey": self.creds.secret_key, "region": REGION}

    def start(self, timeout: float = 90.0, tries: int = 3) -> None:
        """Spawn and wait until ready; a store that exits at once (a port taken between picking it
        and binding it, by a process beside this one) is started again on fresh ports."""
        for attempt in range(1, tries + 1):
            self._spawn()
            try:
                self._wait_ready(timeout)
                return
            except StoreExited:
                if attempt == tries:
                    raise
                log.warning("the object store exited while starting; trying again on other ports")
                if not self._fixed_port:
                    self.port = free_port()

    def args(self) -> list[str]:
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc = (free_port() for _ in range(7))
        self._master_port = master
        self._grpc_ports = {"master": master_grpc, "volume": volume_grpc, "filer": filer_grpc, "s3": s3_grpc}
        return [
            "-logtostderr", "-v=0", "server",
            f"-dir={self.data_dir}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.telemetry=false",
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}", "-master.defaultReplication=000",
            "-master.resumeState=false",  # a single master: its topology comes back from the volume server
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            *self._socket("filer"),
            "-s3", f"-s3.port={self.port}", f"-s3.port.grpc={s3_grpc}", f"-s3.ip.bind={self.address}",
            f"-s3.config={self.run_dir / 'identities.json'}", "-s3.iam=false",
            "-s3.autoCreateBucket=false",  # as S3 does: a PUT into a missing bucket is NoSuchBucket
            "-s3.port.iceberg=0", "-s3.port.lance=0", *self._socket("s3"),
        ]

    def _socket(self, component: str) -> list[str]:
        """Its Unix socket in the run directory where the path fits a socket address (108 bytes), else
        SeaweedFS's default (a per-port name under the temporary directory)."""
        path = self.run_dir / f"{component}.sock"
        return [f"-{component}.localSocket={path}"] if len(os.fsencode(path)) < 100 else []

    def _spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.data_dir.glob("m[0-9]*"):  # earlier masters' state, never resumed
            if stale.is_dir() and stale.name[1:].isdigit():
                shutil.rmtree(stale, ignore_errors=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "identities.json"
        config.touch(mode=0o600)
        config.write_text(json.dumps(identities(self.creds)))
        env = {**os.environ, **GO_ENV, **WEED_ENV}
        with self._lock, (self.log_dir / "objectstore.log").open("ab") as out:
            if self._stopped:
                raise RuntimeError("the object store was stopped before it started")
            self.proc = subprocess.Popen([str(self.binary), *self.args()], cwd=self.run_dir, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def client(self, secret_key: str | None = None, read_timeout: float = 5) -> S3Client:
        """A boto3 S3 client for this store (path-style addressing, this cluster's keys)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=self.creds.access_key,
            aws_secret_access_key=secret_key or self.creds.secret_key,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=read_timeout,
                          retries={"max_attempts": 1}))

    def _volume_server_joined(self) -> bool:
        conn = http.client.HTTPConnection(LOOPBACK, self._master_port, timeout=2)
        try:
            conn.request("GET", "/dir/status")
            topology = json.loads(conn.getresponse().read()).get("Topology", {})
        finally:
            conn.close()
        return bool(topology.get("Max", 0))

    def _write_probe(self, s3: S3Client) -> None:
        """A bucket of its own, an object, both deleted: writes need the filer's lock ring, which
        forms a few seconds after the S3 API first answers. Every try uses the same bucket, so the
        one that succeeds also removes what an earlier one left."""
        from botocore.exceptions import ClientError

        try:
            s3.create_bucket(Bucket=self._probe_bucket)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        s3.put_object(Bucket=self._probe_bucket, Key="probe", Body=b"ready")
        s3.delete_object(Bucket=self._probe_bucket, Key="probe")
        s3.delete_bucket(Bucket=self._probe_bucket)

    def _wait_ready(self, timeout: float) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        assert self.proc is not None
        s3 = self.client(read_timeout=30)  # a write waits for the lock ring rather than failing
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self._stopped:
                raise RuntimeError("the object store was stopped while it started")
            if self.proc.poll() is not None:
                raise StoreExited(f"the object store exited with {self.proc.returncode}; see objectstore.log")
            try:
                s3.list_buckets()
                if not self._volume_server_joined():
                    last = f"no volume server has joined the master (or no {VOLUME_SIZE_MB} MB volume fits its disk)"
                else:
                    self._write_probe(s3)
                    return
            except (BotoCoreError, ClientError, OSError, ValueError) as e:
                last = e
            time.sleep(0.25)
        raise TimeoutError(f"the object store's S3 API did not answer within {timeout:.0f} s: {last}")

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds: by then the volume server and the filer's store
        are closed, and what the filer still tries (flushing its own event log to a volume server that
        has already stopped) only retries until its 15 s shutdown timeout. Then the Unix sockets it
        leaves: gRPC's are always under /tmp, named by port."""
        with self._lock:
            self._stopped = True
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for sock in ("filer.sock", "s3.sock"):
            (self.run_dir / sock).unlink(missing_ok=True)
        for component, port in self._grpc_ports.items():
            Path(f"/tmp/seaweedfs-{component}-grpc-{port}.sock").unlink(missing_ok=True)
