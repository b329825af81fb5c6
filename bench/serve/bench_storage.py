"""The storage initializer's copy from an S3-compatible store, side by side and interleaved on this
machine: a 100 MiB model directory (four safetensors files of 25 MiB random bytes and a config.json)
in a SeaweedFS the benchmark starts on the loopback (the embedded cluster's object store, built from
its Go module by embedded-cluster/build-seaweedfs.sh), copied into an empty directory by

- init: `python -m kubeforge_trainer.storage fetch --uri s3://... --dest DIR`, a process of its own as
  the init container runs it (interpreter start, listing, key checks and boto3's transfer manager);
- init_digest: the same with `--digest`, which also hashes the copy (formats.identity);
- host: the same S3 client (boto3, configured as the initializer configures it) in this process:
  list the prefix, then `download_file` (boto3's transfer manager, its default settings) of each object
  in turn;
- host_process: that host copy as a process of its own, and init_in_process: the initializer's own
  command line called in this process (context: what a process start costs, and how the two copies
  compare without it).

Each round runs every copy once, in a rotated order, into a fresh directory; every copy is compared
with the source byte for byte once before timing. Ratios are per round: throughput (bytes/s) over the
host copy's. Writes bench/results/storage.json."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig

if TYPE_CHECKING:  # imported where used, so that `host-copy` starts as lightly as the initializer
    from minicluster.objectstore import ObjectStore
    from mypy_boto3_s3 import S3Client

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
SHARDS, SHARD_MIB, LARGE_SHARD_MIB = 4, 25, 256
SETTLE_S = 0.5  # between copies: the store's and the kernel's work after a copy is not the next copy's
Obj = dict[str, Any]
COPIES = ("init", "host", "init_digest", "host_process", "init_in_process")


def model_dir(path: Path, shard_mib: int) -> Path:
    """config.json and SHARDS safetensors files of random bytes (a sharded checkpoint's names)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    for i in range(1, SHARDS + 1):
        with (path / f"model-{i:05d}-of-{SHARDS:05d}.safetensors").open("wb") as f:
            for _ in range(shard_mib):
                f.write(os.urandom(MiB))
    return path


def host_copy(uri: str, dest: Path) -> int:
    """The host's copy: the initializer's S3 client, a listing, then `download_file` of each object."""
    from kubeforge_api.storage import split_s3
    from kubeforge_trainer.storage.client import Credentials, make_client

    client: S3Client = make_client(Credentials.from_env(uri, None), uri)
    bucket, prefix = split_s3(uri)
    under = prefix.rstrip("/") + "/"
    copied = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=under):
        for obj in page.get("Contents", []):
            target = dest / obj["Key"][len(under):]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(target), Config=TransferConfig())
            copied += int(obj.get("Size", 0))
    return copied


def tree(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """`env` set in this process's environment (the AWS_* keys the S3 client reads), then restored."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Bench:
    def __init__(self, uri: str, digest: str, env: dict[str, str], work: Path) -> None:
        self.uri, self.digest, self.env, self.work = uri, digest, env, work

    def run(self, copy: str) -> tuple[float, Path]:
        """One copy into a fresh directory: its wall time, and the directory."""
        dest = self.work / f"dest-{uuid.uuid4().hex[:8]}"
        py = sys.executable
        fetch = ["fetch", "--uri", self.uri, "--dest", str(dest)]
        commands = {"init": [py, "-m", "kubeforge_trainer.storage", *fetch],
                    "init_digest": [py, "-m", "kubeforge_trainer.storage", *fetch, "--digest", self.digest],
                    "host_process": [py, str(Path(__file__).resolve()), "host-copy", self.uri, str(dest)]}
        t0 = time.perf_counter()
        if copy == "host":
            with environment(self.env):
                host_copy(self.uri, dest)
        elif copy == "init_in_process":
            from kubeforge_trainer.storage.__main__ import main as storage

            with environment(self.env), contextlib.redirect_stdout(io.StringIO()):
                if storage(fetch):
                    raise RuntimeError(f"{copy} failed")
        else:
            done = subprocess.run(commands[copy], env={**os.environ, **self.env}, capture_output=True, text=True,
                                  timeout=600)
            if done.returncode:
                raise RuntimeError(f"{copy} exited {done.returncode}: {done.stderr.strip()[-1000:]}")
        return time.perf_counter() - t0, dest

    def timed(self, copy: str) -> float:
        seconds, dest = self.run(copy)
        shutil.rmtree(dest)
        os.sync()
        time.sleep(SETTLE_S)
        return seconds


def spread(values: list[float]) -> Obj:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}


def summarize(rounds: list[dict[str, float]], size: int) -> Obj:
    def ratio(a: str, b: str) -> Obj:  # a's throughput over b's: b's time over a's
        return spread([r[b] / r[a] for r in rounds])

    return {
        "points": {c: {"seconds": spread([r[c] for r in rounds]),
                       "mb_per_s": spread([size / 1e6 / r[c] for r in rounds])} for c in rounds[0]},
        "init_vs_host": ratio("init", "host"),
        "init_digest_vs_host": ratio("init_digest", "host"),
        "init_vs_host_process": ratio("init", "host_process"),
        "init_in_process_vs_host": ratio("init_in_process", "host"),
        "digest_seconds": spread([r["init_digest"] - r["init"] for r in rounds]),
        "process_start_seconds": spread([r["host_process"] - r["host"] for r in rounds]),
    }


def weed_binary() -> Path:
    done = subprocess.run([str(REPO / "embedded-cluster" / "build-seaweedfs.sh")], capture_output=True, text=True,
                          timeout=3600)
    if done.returncode:
        raise RuntimeError(f"building SeaweedFS failed: {done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def measure(store: ObjectStore, work: Path, shard_mib: int, rounds: int) -> Obj:
    """Every copy of a model of SHARDS files of `shard_mib` MiB, warmed up and checked, then `rounds`
    rounds in a rotated order."""
    from kubeforge_trainer.formats.identity import identify

    src = model_dir(work / f"src-{shard_mib}", shard_mib)
    size = sum(p.stat().st_size for p in src.iterdir())
    client = store.client(read_timeout=60)
    bucket, prefix = "models", f"bench/model-{shard_mib}"
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
    for p in sorted(src.iterdir()):
        client.upload_file(str(p), bucket, f"{prefix}/{p.name}")
    env = {"AWS_ACCESS_KEY_ID": store.creds.access_key, "AWS_SECRET_ACCESS_KEY": store.creds.secret_key,
           "AWS_ENDPOINT_URL": store.endpoint, "KUBEFORGE_TERMINATION_LOG": str(work / "termination.log")}
    bench = Bench(f"s3://{bucket}/{prefix}", identify(src).digest, env, work)
    want = tree(src)
    for copy in COPIES:  # warm-up, and every copy is the source byte for byte
        _, dest = bench.run(copy)
        if tree(dest) != want:
            raise AssertionError(f"{copy}: the copy differs from the source")
        shutil.rmtree(dest)
    shutil.rmtree(src)
    timed = [{c: bench.timed(c) for c in COPIES[i % len(COPIES):] + COPIES[:i % len(COPIES)]} for i in range(rounds)]
    return {"model": f"{SHARDS} safetensors files of {shard_mib} MiB random bytes and a config.json ({size} bytes)",
            "bytes": size, **summarize(timed, size), "rounds": timed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10, help="rounds of the 100 MiB model (10: each copy twice "
                    "in each place of the order)")
    ap.add_argument("--large-rounds", type=int, default=5, help="rounds of the 1 GiB model (0: skip it)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "storage.json")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "embedded-cluster"))  # its object store
    from minicluster.objectstore import ObjectStore

    work = Path(tempfile.mkdtemp(prefix="kf-bench-storage-"))
    store = ObjectStore(weed_binary(), work / "s3", work / "logs", "127.0.0.1")
    try:
        store.start()
        main_part = measure(store, work, SHARD_MIB, args.rounds)
        large = measure(store, work, LARGE_SHARD_MIB, args.large_rounds) if args.large_rounds else None
    finally:
        store.stop()
        shutil.rmtree(work, ignore_errors=True)
    import boto3

    result = {"machine": f"{os.cpu_count()}-core CPU, SeaweedFS on the loopback (same machine), nothing pinned",
              "python": platform.python_version(), "boto3": boto3.__version__,
              "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), **main_part,
              **({"large": large} if large else {})}
    args.out.write_text(json.dumps(result, indent=2))
    brief = {k: v for k, v in result.items() if k not in ("rounds", "large", "points")}
    if large:
        brief["large"] = {k: v for k, v in large.items() if k not in ("rounds", "points")}
    print(json.dumps(brief, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["host-copy"]:
        host_copy(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
