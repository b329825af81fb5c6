"""Where models and data live and what they are: a `pvc://CLAIM/PATH` on a PersistentVolumeClaim or
an `s3://BUCKET/PREFIX` in an S3-compatible object store (credentials from a Secret named beside the
uri, with the standard AWS keys), the formats a model directory may have, and the exit codes of the
storage initializer (the init container that copies an `s3://` model or data set into the pod,
verified against the digest recorded when it was published). Plain names only, no pydantic: the
storage initializer starts fast; the models that use these live in `sources`."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

DNS1123_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?$"
PVC_URI_PATTERN: Final = r"^pvc://[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?(/[^/\x00]+)+/?$"
# An S3 bucket name (3-63 of lowercase letters, digits, dots and hyphens), then an optional prefix
# of clean path segments (no empty, `.` or `..` segment: the prefix becomes a local path).
S3_URI_PATTERN: Final = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*'()=+,@~-]+)*/?$"
STORAGE_URI_PATTERN: Final = f"({PVC_URI_PATTERN})|({S3_URI_PATTERN})"
MAX_URI_LENGTH: Final = 1024

# The keys a credentials Secret may hold (AWS's own names, so the same Secret works for every client).
ACCESS_KEY_ID: Final = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY: Final = "AWS_SECRET_ACCESS_KEY"
ENDPOINT_URL: Final = "AWS_ENDPOINT_URL"
REGION: Final = "AWS_REGION"
CREDENTIAL_KEYS: Final = (ACCESS_KEY_ID, SECRET_ACCESS_KEY, ENDPOINT_URL, REGION)
REQUIRED_CREDENTIAL_KEYS: Final = (ACCESS_KEY_ID, SECRET_ACCESS_KEY)

# The storage initializer: the init container of a server pod that serves an s3:// model (same image).
STORAGE_INITIALIZER_NAME: Final = "storage-initializer"
STORAGE_COMMAND: Final = ("python", "-m", "kubeforge_trainer.storage")

# Exit codes of the storage initializer (sysexits), read back by the operator into a reason.
EXIT_NOT_FOUND: Final = 66  # EX_NOINPUT: no such bucket or object under the prefix
EXIT_CORRUPT: Final = 65  # EX_DATAERR: the copy's digest is not the recorded one, or an unsafe key
EXIT_UNAVAILABLE: Final = 69  # EX_UNAVAILABLE: the endpoint cannot be reached
EXIT_ACCESS_DENIED: Final = 77  # EX_NOPERM: the credentials are refused or incomplete


class ModelFormat(StrEnum):
    """What a model directory holds, detected from its files."""

    KUBEFORGE = "kubeforge"  # model.safetensors + model-card.json naming a built-in architecture
    HF_TRANSFORMERS = "hf-transformers"  # config.json + *.safetensors (+ tokenizer or image processor)
    TORCH_EXPORT = "torch-export"  # model.pt2 written by torch.export.save


DOT_SEGMENT: Final = r"(^|/)[.][.]?(/|$)"


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, prefix without a trailing slash) of an `s3://` uri."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.rstrip("/")


def split_pvc(uri: str) -> tuple[str, str]:
    """(claim, path inside it without a trailing slash) of a `pvc://` uri."""
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    return claim, path.rstrip("/")


def valid_uri(uri: str) -> bool:
    return len(uri) <= MAX_URI_LENGTH and re.fullmatch(STORAGE_URI_PATTERN, uri) is not None
