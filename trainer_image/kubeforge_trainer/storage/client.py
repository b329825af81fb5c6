"""The S3 client, built from the standard AWS environment (the keys of a credentials Secret):
explicit keys only (no shared config files, no instance metadata), path-style addressing (what
S3-compatible stores serve), short timeouts and few retries so an unreachable store is reported in
seconds, and checksums only where a request requires one (stores other than AWS reject the newer
default ones)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from kubeforge_api.storage import (
    ACCESS_KEY_ID,
    ENDPOINT_URL,
    EXIT_ACCESS_DENIED,
    EXIT_UNAVAILABLE,
    REGION,
    SECRET_ACCESS_KEY,
)

from .errors import StorageError, credentials_owner

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_REGION = "us-east-1"
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 60
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Credentials:
    """The environment's credentials; `repr` never shows the keys."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    endpoint: str | None
    region: str

    @classmethod
    def from_env(cls, uri: str, secret: str | None, env: Mapping[str, str] | None = None) -> Credentials:
        """Refuses (EXIT_ACCESS_DENIED) when a key is missing: nothing anonymous is attempted."""
        env = os.environ if env is None else env
        missing = [k for k in (ACCESS_KEY_ID, SECRET_ACCESS_KEY) if not env.get(k)]
        if missing:
            raise StorageError(EXIT_ACCESS_DENIED, f"{uri}: {credentials_owner(secret)} has no "
                                                   f"{' and no '.join(missing)}")
        return cls(env[ACCESS_KEY_ID], env[SECRET_ACCESS_KEY], env.get(ENDPOINT_URL) or None,
                   env.get(REGION) or DEFAULT_REGION)


def make_client(creds: Credentials, uri: str) -> S3Client:
    config = Config(s3={"addressing_style": "path"}, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    read_timeout=READ_TIMEOUT_SECONDS, retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                    request_checksum_calculation="when_required", response_checksum_validation="when_required")
    session = boto3.session.Session(aws_access_key_id=creds.access_key_id,
                                    aws_secret_access_key=creds.secret_access_key, region_name=creds.region)
    try:
        return session.client("s3", endpoint_url=creds.endpoint, config=config)
    except ValueError:  # botocore's message quotes the endpoint, which came from the Secret
        raise StorageError(EXIT_UNAVAILABLE, f"{uri}: {ENDPOINT_URL} is not a valid URL") from None
