"""`python -m kubeforge_trainer.storage fetch|publish`: the command line of the storage initializer.

    fetch --uri s3://BUCKET/PREFIX --dest DIR [--digest sha256:...] [--max-bytes N] [--secret-name NAME] [--clean]
    publish --src DIR --uri s3://BUCKET/PREFIX [--secret-name NAME]

Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (AWS_ENDPOINT_URL and AWS_REGION
optional); `--secret-name` only names their Secret in messages. A failure exits with a storage exit
code (kubeforge_api.storage) and one line on stderr and in the termination log."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from kubeforge_api.constants import TERMINATION_LOG_PATH, Env
from kubeforge_api.storage import EXIT_CORRUPT, EXIT_NOT_FOUND, S3_URI_PATTERN
from s3transfer.exceptions import RetriesExceededError

from ..formats.identity import FormatError, detect, digest
from .client import Credentials, make_client
from .errors import EXIT_IO, StorageError, classify
from .transfer import entries, fetch, prepare, publish

PROG = "python -m kubeforge_trainer.storage"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def _s3_uri(text: str) -> str:
    if re.fullmatch(S3_URI_PATTERN, text) is None:
        raise argparse.ArgumentTypeError(f"not an s3://BUCKET/PREFIX uri: {text!r}")
    return text


def _digest(text: str) -> str:
    if DIGEST.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"not a sha256:<64 hex digits> digest: {text!r}")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Copy models between an object store and a directory.")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download every object under an s3:// prefix (or the one it names) into DIR")
    f.add_argument("--uri", type=_s3_uri, required=True)
    f.add_argument("--dest", type=Path, required=True, help="an empty (or absent) directory")
    f.add_argument("--digest", type=_digest, help="the model directory's digest (formats.identity) to verify")
    f.add_argument("--max-bytes", type=int, help="refuse a prefix holding more bytes than this")
    f.add_argument("--secret-name", help="the Secret the credentials came from (named in messages)")
    f.add_argument("--clean", action="store_true", help="empty DIR first (a retried init container's last try)")
    f.set_defaults(run=_fetch)
    p = sub.add_parser("publish", help="upload every file under DIR below an s3:// prefix")
    p.add_argument("--src", type=Path, required=True)
    p.add_argument("--uri", type=_s3_uri, required=True)
    p.add_argument("--secret-name", help="the Secret the credentials came from (named in messages)")
    p.set_defaults(run=_publish)
    return parser


def _verify(dest: Path, want: str, uri: str) -> None:
    """The copy's digest, as formats.identity computes it, must be `want`."""
    try:
        got = digest(dest, detect(dest))
    except FormatError as e:
        raise StorageError(EXIT_NOT_FOUND, str(e).replace(str(dest), uri)) from None
    except FileNotFoundError as e:
        name = Path(e.filename).name if e.filename else "a file"
        raise StorageError(EXIT_NOT_FOUND, f"{uri}: no {name}") from None
    if got != want:
        raise StorageError(EXIT_CORRUPT, f"{uri}: the copy's digest is {got}, not the recorded {want}")


def _fetch(args: argparse.Namespace) -> str:
    creds = Credentials.from_env(args.uri, args.secret_name)
    with _reported(args.uri, args.secret_name, creds.endpoint, args.dest):
        client = make_client(creds, args.uri)
        found = entries(client, args.uri, args.max_bytes)
        if not found:
            raise StorageError(EXIT_NOT_FOUND, f"{args.uri}: no such object")
        prepare(args.dest, args.clean)
        copied = fetch(client, args.uri, args.dest, found)
        if args.digest:
            _verify(args.dest, args.digest, args.uri)
    return f"{args.uri}: {copied.objects} object(s), {copied.bytes} bytes copied to {args.dest}"


def _publish(args: argparse.Namespace) -> str:
    creds = Credentials.from_env(args.uri, args.secret_name)
    with _reported(args.uri, args.secret_name, creds.endpoint, args.src):
        publish(make_client(creds, args.uri), args.src, args.uri)
    return str(args.uri).rstrip("/")


@contextlib.contextmanager
def _reported(uri: str, secret: str | None, endpoint: str | None, local: Path) -> Iterator[None]:
    """Turns what boto3 and the file system raise into a `StorageError`, without their text where it
    could quote a credential."""
    try:
        yield None
    except RetriesExceededError as e:  # a download whose body kept breaking off
        last = e.last_exception
        raise classify(last if isinstance(last, Exception) else e, uri, secret, endpoint) from None
    except (BotoCoreError, ClientError) as e:
        raise classify(e, uri, secret, endpoint) from None
    except OSError as e:
        raise StorageError(EXIT_IO, f"{local}: {e.strerror or type(e).__name__}") from None


def _termination_log() -> Path:
    return Path(os.environ.get(Env.TERMINATION_LOG, TERMINATION_LOG_PATH))


def fail(error: StorageError) -> int:
    """One line on stderr and in the termination log (where the kubelet provides one); the exit code."""
    line = str(error)[:1024]
    print(line, file=sys.stderr, flush=True)
    with contextlib.suppress(OSError):
        path = _termination_log()
        if path.exists() or Env.TERMINATION_LOG in os.environ:
            path.write_text(line + "\n")
    return error.code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run: Callable[[argparse.Namespace], str] = args.run
    try:
        print(run(args), flush=True)
    except StorageError as e:
        return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
