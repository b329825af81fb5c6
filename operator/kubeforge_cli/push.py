"""`kubeforge push DIR s3://BUCKET/PREFIX`: upload a model directory (a Kubeforge artifact, a Hugging
Face `save_pretrained` directory or a `model.pt2`) to an object store with the AWS_* environment,
making the bucket if it does not exist, and print its format and digest (what a ServingJob serving
it will check)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from kubeforge_api.storage import S3_URI_PATTERN
from kubeforge_trainer.formats.identity import FormatError, identify
from kubeforge_trainer.publish import copy_directory
from kubeforge_trainer.storage.errors import StorageError


def push(directory: Path, uri: str) -> int:
    if re.fullmatch(S3_URI_PATTERN, uri) is None:
        print(f"kubeforge: not an s3://BUCKET/PREFIX uri: {uri!r}", file=sys.stderr)
        return 2
    try:
        found = identify(directory)
        copy_directory(directory, uri, None, create_bucket=True)
    except (FormatError, StorageError) as e:
        print(f"kubeforge: {e}", file=sys.stderr)
        return 1
    print(f"kubeforge: pushed {directory} to {uri.rstrip('/')} ({found.format.value}, {found.digest}, "
          f"{found.size_bytes} bytes)")
    return 0
