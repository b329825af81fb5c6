"""`python -m kubeforge_trainer.publish --storage DIR --uri s3://BUCKET/PREFIX [--compressed PATH]`:
the publish stage of a TrainingJob with `spec.output`. It copies the trained artifact (`DIR/artifact`)
to `PREFIX/artifact` and the published compressed one (`DIR/PATH`) to `PREFIX/PATH` (making the
bucket when it does not exist), then writes
where each went as the pod's termination message (`kubeforge_api.contracts.PublishResult`). A
failure exits with the storage exit code and one line (never a credential). An artifact that a
fenced (older) attempt wrote is refused before anything is copied (`artifacts.check_current`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError
from kubeforge_api.contracts import PublishResult
from kubeforge_api.model import RelativePath
from kubeforge_api.storage import split_s3
from pydantic import TypeAdapter, ValidationError

from .artifacts import ArtifactError, check_current
from .formats.identity import FormatError
from .storage.__main__ import fail
from .storage.client import Credentials, make_client
from .storage.errors import EXIT_IO, EXIT_USAGE, StorageError, classify
from .storage.transfer import publish
from .termination import termination_log

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ARTIFACT = "artifact"


def copy_directory(src: Path, uri: str, secret: str | None, create_bucket: bool = False) -> None:
    """Upload every file under `src` below `uri` with the environment's credentials (`secret` names
    their Secret in messages); `create_bucket` makes a missing bucket first. Raises `StorageError`."""
    creds = Credentials.from_env(uri, secret)
    try:
        client = make_client(creds, uri)
        if create_bucket:
            _ensure_bucket(client, split_s3(uri)[0])
        publish(client, src, uri)
    except (BotoCoreError, ClientError) as e:
        raise classify(e, uri, secret, creds.endpoint) from None
    except (OSError, FormatError) as e:
        raise StorageError(EXIT_IO, f"{src.name}/: {getattr(e, 'strerror', None) or e}") from None


def _ensure_bucket(client: S3Client, bucket: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as e:
        if str(e.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        client.create_bucket(Bucket=bucket)


def _copy(storage: Path, relative: str, base: str, secret: str | None) -> str:
    uri = f"{base.rstrip('/')}/{relative}"
    copy_directory(storage / relative, uri, secret, create_bucket=True)
    return uri


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kubeforge_trainer.publish", description=__doc__)
    p.add_argument("--storage", type=Path, required=True, help="the job's storage directory")
    p.add_argument("--uri", required=True, help="spec.output.uri")
    p.add_argument("--compressed", help="the published compressed artifact, relative to the storage")
    p.add_argument("--secret-name", help="the Secret the credentials came from (named in messages)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.compressed is not None:
            TypeAdapter(RelativePath).validate_python(args.compressed)
        check_current(args.storage / ARTIFACT)
        result = PublishResult(
            artifact=_copy(args.storage, ARTIFACT, args.uri, args.secret_name),
            compressed=_copy(args.storage, args.compressed, args.uri, args.secret_name) if args.compressed else None)
    except ValidationError:
        return fail(StorageError(EXIT_USAGE, f"not a clean relative path: {args.compressed!r}"))
    except StorageError as e:
        return fail(e)
    except ArtifactError as e:
        return fail(StorageError(EXIT_USAGE, str(e)))
    message = result.model_dump_json(exclude_none=True)
    print(message, flush=True)
    with contextlib.suppress(OSError):
        termination_log().write_text(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
