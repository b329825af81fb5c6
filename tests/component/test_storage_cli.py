"""The storage initializer (`python -m kubeforge_trainer.storage`) as a process against a real S3
server (the embedded cluster's SeaweedFS, started here on the loopback): a prefix, one object, a
multipart-sized file and a publish round trip copy byte for byte; a missing object or bucket, a
wrong key, an unreachable endpoint and a wrong digest exit with their storage code and one line on
stderr and in the termination log. SeaweedFS refuses to store a `..` key, so a store that lists one
anyway is a scripted HTTP server. No run ever prints a credential."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from kubeforge_api.storage import EXIT_ACCESS_DENIED, EXIT_CORRUPT, EXIT_NOT_FOUND, EXIT_UNAVAILABLE
from scripted_http import Reply, scripted_server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


@dataclass(frozen=True)
class Store:
    endpoint: str
    access_key: str
    secret_key: str
    client: S3Client


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    termination: str


def _weed_binary() -> Path:
    script = REPO / "embedded-cluster" / "build-seaweedfs.sh"
    if not script.is_file():
        pytest.skip("the embedded cluster's object store (build-seaweedfs.sh) is not in this checkout")
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        pytest.fail(f"building SeaweedFS failed: {done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    objectstore = pytest.importorskip("minicluster.objectstore", reason="the embedded cluster has no object store")
    root = tmp_path_factory.mktemp("s3")
    (root / "logs").mkdir()
    server = objectstore.ObjectStore(_weed_binary(), root, root / "logs", "127.0.0.1")
    try:
        server.start()
        yield Store(server.endpoint, server.creds.access_key, server.creds.secret_key, server.client())
    finally:
        server.stop()


@pytest.fixture
def bucket(store: Store) -> str:
    name = f"kf-{uuid.uuid4().hex[:12]}"
    store.client.create_bucket(Bucket=name)
    return name


def storage(store: Store | None, tmp: Path, *args: str, **env: str) -> Run:
    """One run of the initializer with the store's credentials (overridden by `env`)."""
    log = tmp / f"termination-{uuid.uuid4().hex[:6]}.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if store is not None:
        base |= {"AWS_ACCESS_KEY_ID": store.access_key, "AWS_SECRET_ACCESS_KEY": store.secret_key,
                 "AWS_ENDPOINT_URL": store.endpoint}
    done = subprocess.run([sys.executable, "-m", "kubeforge_trainer.storage", *args], capture_output=True, text=True,
                          env={**base, "KUBEFORGE_TERMINATION_LOG": str(log), **env}, timeout=120)
    run = Run(done.returncode, done.stdout, done.stderr, log.read_text() if log.exists() else "")
    if store is not None:
        for secret in (store.secret_key, store.access_key):
            assert secret not in run.stdout + run.stderr + run.termination, "a credential was printed"
    return run


def failed(run: Run, code: int, line: str) -> None:
    """Exit `code`, and `line` alone on stderr and in the termination log."""
    assert (run.code, run.stderr.strip(), run.termination.strip()) == (code, line, line), run


def tree(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def model_dir(path: Path) -> Path:
    """A directory in a multi-file format (its digest is its manifest's) with a file above the multipart size."""
    (path / "tokenizer").mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(os.urandom(17 * MiB))
    (path / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}')
    return path


def test_publish_then_fetch_round_trips_a_directory_and_verifies_its_digest(store: Store, bucket: str,
                                                                           tmp_path: Path) -> None:
    from kubeforge_trainer.formats.identity import identify

    src = model_dir(tmp_path / "src")
    uri = f"s3://{bucket}/models/llama"
    published = storage(store, tmp_path, "publish", "--src", str(src), "--uri", uri, "--secret-name", "creds")
    assert (published.code, published.stdout.strip()) == (0, uri), published
    keys = sorted(o["Key"] for o in store.client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"models/llama/{name}" for name in ("config.json", "model.safetensors", "tokenizer/tokenizer.json")]
    digest = identify(src).digest
    fetched = storage(store, tmp_path, "fetch", "--uri", uri, "--dest", str(tmp_path / "dest"), "--digest", digest)
    assert fetched.code == 0 and "3 object(s)" in fetched.stdout, fetched
    assert tree(tmp_path / "dest") == tree(src)


def test_a_uri_naming_one_object_fetches_that_object(store: Store, bucket: str, tmp_path: Path) -> None:
    store.client.put_object(Bucket=bucket, Key="exported/model.pt2", Body=b"program")
    store.client.put_object(Bucket=bucket, Key="exported/model.pt2.bak", Body=b"other")
    run = storage(store, tmp_path, "fetch", "--uri", f"s3://{bucket}/exported/model.pt2", "--dest", str(tmp_path / "d"))
    assert run.code == 0, run
    assert tree(tmp_path / "d") == {"model.pt2": b"program"}


def test_a_prefix_is_a_directory_not_a_string_prefix(store: Store, bucket: str, tmp_path: Path) -> None:
    store.client.put_object(Bucket=bucket, Key="m/a.txt", Body=b"a")
    store.client.put_object(Bucket=bucket, Key="m-other/b.txt", Body=b"b")
    run = storage(store, tmp_path, "fetch", "--uri", f"s3://{bucket}/m/", "--dest", str(tmp_path / "d"))
    assert run.code == 0 and tree(tmp_path / "d") == {"a.txt": b"a"}, run


def test_missing_objects_and_buckets_are_not_found(store: Store, bucket: str, tmp_path: Path) -> None:
    missing = storage(store, tmp_path, "fetch", "--uri", f"s3://{bucket}/nothing", "--dest", str(tmp_path / "d"))
    failed(missing, EXIT_NOT_FOUND, f"s3://{bucket}/nothing: no such object")
    absent = f"s3://kf-absent-{uuid.uuid4().hex[:8]}/m"
    failed(storage(store, tmp_path, "fetch", "--uri", absent, "--dest", str(tmp_path / "d")), EXIT_NOT_FOUND,
           f"{absent}: no such bucket")


def test_refused_or_missing_credentials_name_the_secret_never_its_values(store: Store, bucket: str,
                                                                         tmp_path: Path) -> None:
    store.client.put_object(Bucket=bucket, Key="m/a.txt", Body=b"a")
    uri, dest = f"s3://{bucket}/m", str(tmp_path / "d")
    wrong_secret = storage(store, tmp_path, "fetch", "--uri", uri, "--dest", dest, "--secret-name", "creds",
                           AWS_SECRET_ACCESS_KEY="not-" + store.secret_key[::-1])
    failed(wrong_secret, EXIT_ACCESS_DENIED, f"{uri}: the credentials in Secret creds were refused "
                                             "(SignatureDoesNotMatch)")
    assert store.secret_key[::-1] not in wrong_secret.stderr
    wrong_key = storage(store, tmp_path, "fetch", "--uri", uri, "--dest", dest, "--secret-name", "creds",
                        AWS_ACCESS_KEY_ID="KFNOSUCHKEY0000")
    failed(wrong_key, EXIT_ACCESS_DENIED, f"{uri}: the credentials in Secret creds were refused (InvalidAccessKeyId)")
    assert "KFNOSUCHKEY0000" not in wrong_key.stderr
    no_keys = storage(None, tmp_path, "fetch", "--uri", uri, "--dest", dest, "--secret-name", "creds",
                      AWS_ENDPOINT_URL=store.endpoint)
    failed(no_keys, EXIT_ACCESS_DENIED, f"{uri}: Secret creds has no AWS_ACCESS_KEY_ID and no AWS_SECRET_ACCESS_KEY")
    assert not (tmp_path / "d").exists()


def test_an_unreachable_endpoint_is_unavailable(store: Store, tmp_path: Path) -> None:
    from kubeforge_operator.ports import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    run = storage(store, tmp_path, "fetch", "--uri", "s3://models/m", "--dest", str(tmp_path / "d"),
                  AWS_ENDPOINT_URL=endpoint)
    failed(run, EXIT_UNAVAILABLE, f"s3://models/m: cannot reach the object store at {endpoint} "
                                  "(EndpointConnectionError)")


def test_a_copy_whose_digest_is_not_the_recorded_one_is_corrupt(store: Store, bucket: str, tmp_path: Path) -> None:
    from kubeforge_trainer.formats.identity import identify

    src = model_dir(tmp_path / "src")
    uri, recorded = f"s3://{bucket}/m", identify(src).digest
    assert storage(store, tmp_path, "publish", "--src", str(src), "--uri", uri).code == 0
    store.client.put_object(Bucket=bucket, Key="m/config.json", Body=b'{"model_type": "swapped"}')  # after publishing
    run = storage(store, tmp_path, "fetch", "--uri", uri, "--dest", str(tmp_path / "d"), "--digest", recorded)
    assert run.code == EXIT_CORRUPT and run.stderr.startswith(f"{uri}: the copy's digest is sha256:"), run
    assert run.stderr.strip().endswith(f"not the recorded {recorded}") and run.termination == run.stderr


def test_a_prefix_larger_than_the_bound_is_refused_before_anything_is_copied(store: Store, bucket: str,
                                                                            tmp_path: Path) -> None:
    store.client.put_object(Bucket=bucket, Key="m/a.bin", Body=b"x" * 1000)
    run = storage(store, tmp_path, "fetch", "--uri", f"s3://{bucket}/m", "--dest", str(tmp_path / "d"),
                  "--max-bytes", "999")
    failed(run, EXIT_CORRUPT, f"s3://{bucket}/m: more than 999 bytes under the prefix (the limit)")
    assert not (tmp_path / "d").exists()


def test_a_retried_fetch_starts_from_an_empty_directory(store: Store, bucket: str, tmp_path: Path) -> None:
    store.client.put_object(Bucket=bucket, Key="m/a.txt", Body=b"a")
    dest = tmp_path / "d"
    (dest / "stale").mkdir(parents=True)
    (dest / "stale" / "partial.tmp").write_bytes(b"left by an earlier try")
    refused = storage(store, tmp_path, "fetch", "--uri", f"s3://{bucket}/m", "--dest", str(dest))
    assert refused.code != 0 and "not empty" in refused.stderr
    run = storage(store, tmp_path, "fetch", "--uri", f"s3://{bucket}/m", "--dest", str(dest), "--clean")
    assert run.code == 0 and tree(dest) == {"a.txt": b"a"}, run


LISTING = """<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>models</Name><Prefix>m/</Prefix>
<KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>
<Contents><Key>m/fine.txt</Key><Size>4</Size></Contents>
<Contents><Key>m/../../escaped.txt</Key><Size>4</Size></Contents>
</ListBucketResult>"""


def hostile_store(path: str) -> Reply:
    """Lists a key with `..` segments (an S3 store that accepts any key) and serves every object."""
    if "list-type=2" in path:
        return 200, {"Content-Type": "application/xml"}, LISTING.encode()
    return 200, {"Content-Type": "application/octet-stream"}, b"data"


def test_a_key_that_would_escape_the_directory_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    dest = tmp_path / "inner" / "d"
    with scripted_server(hostile_store) as port:
        run = storage(None, tmp_path, "fetch", "--uri", "s3://models/m", "--dest", str(dest),
                      AWS_ACCESS_KEY_ID="KFHOSTILE", AWS_SECRET_ACCESS_KEY="hostile-secret-value",
                      AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    failed(run, EXIT_CORRUPT, "s3://models/m: refusing key 'm/../../escaped.txt': an empty, '.' or '..' path "
                              "segment would escape the directory")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "inner" / "escaped.txt").exists()
    assert not dest.exists() and "hostile-secret-value" not in run.stderr


def test_a_bad_command_line_is_a_usage_error(tmp_path: Path) -> None:
    run = storage(None, tmp_path, "fetch", "--uri", "pvc://claim/x", "--dest", str(tmp_path))
    assert run.code == 2 and "not an s3://BUCKET/PREFIX uri" in run.stderr
