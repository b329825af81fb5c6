"""Copying with boto3's transfer manager: every object of a prefix into a directory (`fetch`), or a
directory's files under a prefix (`publish`), several objects at once and large ones in parallel
parts. The first failure cancels the rest; the caller turns it into an exit code."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import ClientError
from kubeforge_api.storage import split_s3

from ..formats.identity import files
from .errors import EXIT_USAGE, StorageError
from .keys import Entry, directory_prefix, plan, single

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from s3transfer.futures import TransferFuture

MiB = 1024 * 1024
TRANSFER = TransferConfig(multipart_threshold=16 * MiB, multipart_chunksize=16 * MiB, max_concurrency=8)


@dataclass(frozen=True)
class Copied:
    objects: int
    bytes: int


def _listed(client: S3Client, bucket: str, under: str) -> Iterator[tuple[str, int]]:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=under):
        for obj in page.get("Contents", []):
            yield obj["Key"], int(obj.get("Size", 0))


def entries(client: S3Client, uri: str, max_bytes: int | None) -> list[Entry]:
    """What `uri` names: the objects under its prefix, else the one object it names."""
    bucket, prefix = split_s3(uri)
    under = directory_prefix(prefix)
    found = plan(_listed(client, bucket, under), under, uri, max_bytes)
    if found or not prefix:
        return found
    try:
        head = client.head_object(Bucket=bucket, Key=prefix)
    except ClientError as e:
        if str(e.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            return []
        raise
    return [single(prefix, int(head.get("ContentLength", 0)), max_bytes, uri)]


def _all_done(futures: list[TransferFuture]) -> None:
    """Waits for every transfer; the first failure propagates, and leaving the manager's `with`
    block on it cancels the transfers still queued or running."""
    for f in futures:
        f.result()


def prepare(dest: Path, clean: bool) -> None:
    """An empty destination: created, or emptied with `clean` (a retried init container's last try)."""
    dest.mkdir(parents=True, exist_ok=True)
    leftovers = list(dest.iterdir())
    if leftovers and not clean:
        raise StorageError(EXIT_USAGE, f"{dest}: not empty (pass --clean to empty it first)")
    for p in leftovers:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def fetch(client: S3Client, uri: str, dest: Path, found: list[Entry]) -> Copied:
    """Downloads `found` (from `entries`) into `dest`, which `prepare` made empty."""
    bucket, _ = split_s3(uri)
    with create_transfer_manager(client, TRANSFER) as manager:
        futures = []
        for e in found:
            target = dest.joinpath(*e.path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            futures.append(manager.download(bucket, e.key, str(target)))
        _all_done(futures)
    return Copied(len(found), sum(e.size for e in found))


def publish(client: S3Client, src: Path, uri: str) -> Copied:
    """Uploads every regular file under `src` (links and special files are refused) below `uri`."""
    bucket, prefix = split_s3(uri)
    listed = files(src)
    with create_transfer_manager(client, TRANSFER) as manager:
        futures = [manager.upload(str(src / rel), bucket, directory_prefix(prefix) + rel.as_posix())
                   for rel in listed]
        _all_done(futures)
    return Copied(len(listed), sum((src / rel).stat().st_size for rel in listed))
