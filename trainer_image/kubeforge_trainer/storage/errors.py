"""What went wrong talking to the object store, as one line and a storage exit code. Messages name
the uri and the Secret, never a credential: the store's own error text is not repeated (it may quote
the access key id), only its error code."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as EndpointError,
)
from kubeforge_api.storage import EXIT_ACCESS_DENIED, EXIT_CORRUPT, EXIT_NOT_FOUND, EXIT_UNAVAILABLE

EXIT_USAGE: Final = 64  # EX_USAGE: the command line asks for something it cannot do
EXIT_IO: Final = 74  # EX_IOERR: the local directory cannot be read or written (a full volume)
NOT_FOUND_CODES: Final = frozenset({"NoSuchKey", "404", "NotFound"})
DENIED_CODES: Final = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden",
                                 "InvalidToken", "ExpiredToken", "AllAccessDisabled", "AccountProblem",
                                 "AuthorizationHeaderMalformed", "InvalidSecurity"})


class StorageError(Exception):
    """A failure the initializer reports: `code` is its exit status, `str()` its one line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(" ".join(message.split()))
        self.code = code


def unsafe(uri: str, why: str) -> StorageError:
    """An object that must not be copied (a key that escapes the directory, too many, too large)."""
    return StorageError(EXIT_CORRUPT, f"{uri}: {why}")


def credentials_owner(secret: str | None) -> str:
    """How a message names where the credentials came from."""
    return f"Secret {secret}" if secret else "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"


def public_endpoint(endpoint: str | None) -> str:
    """The endpoint as a message may show it: scheme, host and port only (no user info, no path)."""
    if not endpoint:
        return "the default AWS endpoint"
    parts = urlsplit(endpoint)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def classify(error: Exception, uri: str, secret: str | None, endpoint: str | None) -> StorageError:
    """The exit code and line for an exception boto3 raised while working on `uri`."""
    if isinstance(error, StorageError):
        return error
    if isinstance(error, ClientError):
        return _client_error(error, uri, secret, endpoint)
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return StorageError(EXIT_ACCESS_DENIED, f"{uri}: no credentials in {credentials_owner(secret)}")
    if isinstance(error, EndpointError | HTTPClientError):
        return StorageError(EXIT_UNAVAILABLE, f"{uri}: cannot reach the object store at {public_endpoint(endpoint)} "
                                              f"({type(error).__name__})")
    return StorageError(EXIT_UNAVAILABLE, f"{uri}: the object store client failed ({type(error).__name__})")


def _client_error(error: ClientError, uri: str, secret: str | None, endpoint: str | None) -> StorageError:
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    if code == "NoSuchBucket":
        return StorageError(EXIT_NOT_FOUND, f"{uri}: no such bucket")
    if code in NOT_FOUND_CODES:
        return StorageError(EXIT_NOT_FOUND, f"{uri}: no such object")
    if code in DENIED_CODES or status in (401, 403):
        return StorageError(EXIT_ACCESS_DENIED, f"{uri}: the credentials in {credentials_owner(secret)} were "
                                                f"refused ({code or status})")
    return StorageError(EXIT_UNAVAILABLE, f"{uri}: the object store at {public_endpoint(endpoint)} answered "
                                          f"{code or status}")
