"""The storage initializer's pure parts: which local file each listed key becomes (and which keys
are refused), how boto3's errors become exit codes and one line, and that credentials never show."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError
from kubeforge_api.storage import EXIT_ACCESS_DENIED, EXIT_CORRUPT, EXIT_NOT_FOUND, EXIT_UNAVAILABLE
from kubeforge_trainer.storage.client import Credentials
from kubeforge_trainer.storage.errors import StorageError, classify, public_endpoint
from kubeforge_trainer.storage.keys import MAX_DEPTH, MAX_OBJECTS, directory_prefix, plan, single

URI = "s3://models/digits"
SECRET_VALUE = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def test_keys_under_the_prefix_become_paths_below_the_destination() -> None:
    under = directory_prefix("digits")
    found = plan([("digits/model.safetensors", 10), ("digits/tok/vocab.json", 2), ("digits/tok/", 0)],
                 under, URI, None)
    assert [(e.key, e.path, e.size) for e in found] == [("digits/model.safetensors", PurePosixPath("model.safetensors"),
                                                         10), ("digits/tok/vocab.json", PurePosixPath("tok/vocab.json"),
                                                               2)]
    assert directory_prefix("") == "" and plan([("a/b", 1)], "", "s3://models", None)[0].path == PurePosixPath("a/b")


@pytest.mark.parametrize("key", [
    "digits/../escape", "digits/a/../../escape", "digits//abs", "digits/./x", "digits/..", "digits/x\x00y",
    "digits/" + "/".join(["d"] * (MAX_DEPTH + 1)), "digits/" + "n" * 256, "other/outside",
], ids=["dot-dot", "deep dot-dot", "absolute", "dot", "trailing dot-dot", "nul", "too deep", "long name", "outside"])
def test_a_key_that_would_escape_or_abuse_the_directory_is_refused(key: str) -> None:
    with pytest.raises(StorageError) as e:
        plan([("digits/fine", 1), (key, 1)], "digits/", URI, None)
    assert e.value.code == EXIT_CORRUPT and str(e.value).startswith(f"{URI}: ")


def test_an_object_cannot_also_be_a_directory() -> None:
    with pytest.raises(StorageError, match="cannot be a directory"):
        plan([("digits/a", 1), ("digits/a/b", 1)], "digits/", URI, None)


def test_counts_and_bytes_are_bounded() -> None:
    with pytest.raises(StorageError, match="more than 10 bytes"):
        plan([("digits/a", 6), ("digits/b", 6)], "digits/", URI, 10)
    many = ((f"digits/{i}", 0) for i in range(MAX_OBJECTS + 5))
    with pytest.raises(StorageError, match=f"more than {MAX_OBJECTS} objects"):
        plan(many, "digits/", URI, None)
    with pytest.raises(StorageError, match="more than the limit"):
        single("digits/model.pt2", 11, 10, URI)
    assert single("digits/model.pt2", 10, 10, URI).path == PurePosixPath("model.pt2")


def client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "ListObjectsV2")


@pytest.mark.parametrize(("error", "code", "line"), [
    (client_error("NoSuchBucket", 404), EXIT_NOT_FOUND, f"{URI}: no such bucket"),
    (client_error("404", 404), EXIT_NOT_FOUND, f"{URI}: no such object"),
    (client_error("InvalidAccessKeyId", 403, f"The key {SECRET_VALUE} does not exist"), EXIT_ACCESS_DENIED,
     f"{URI}: the credentials in Secret creds were refused (InvalidAccessKeyId)"),
    (client_error("SignatureDoesNotMatch", 403), EXIT_ACCESS_DENIED,
     f"{URI}: the credentials in Secret creds were refused (SignatureDoesNotMatch)"),
    (client_error("", 403), EXIT_ACCESS_DENIED, f"{URI}: the credentials in Secret creds were refused (403)"),
    (client_error("ServiceUnavailable", 503), EXIT_UNAVAILABLE,
     f"{URI}: the object store at http://store:9000 answered ServiceUnavailable"),
    (EndpointConnectionError(endpoint_url="http://store:9000"), EXIT_UNAVAILABLE,
     f"{URI}: cannot reach the object store at http://store:9000 (EndpointConnectionError)"),
    (ReadTimeoutError(endpoint_url="http://store:9000"), EXIT_UNAVAILABLE,
     f"{URI}: cannot reach the object store at http://store:9000 (ReadTimeoutError)"),
    (NoCredentialsError(), EXIT_ACCESS_DENIED, f"{URI}: no credentials in Secret creds"),
], ids=["bucket", "object", "key id", "signature", "bare 403", "5xx", "connection", "timeout", "no credentials"])
def test_store_errors_become_one_line_and_a_storage_exit_code(error: Exception, code: int, line: str) -> None:
    failure = classify(error, URI, "creds", "http://user:pass@store:9000/path")
    assert (failure.code, str(failure)) == (code, line)
    assert SECRET_VALUE not in str(failure) and "pass" not in str(failure)


def test_endpoints_are_shown_without_user_info_or_path() -> None:
    assert public_endpoint("https://AKIA:secret@s3.example.com:8443/x?y=1") == "https://s3.example.com:8443"
    assert public_endpoint(None) == "the default AWS endpoint"


def test_missing_keys_are_access_denied_and_credentials_never_show_in_a_repr() -> None:
    with pytest.raises(StorageError) as e:
        Credentials.from_env(URI, "creds", {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"})
    assert e.value.code == EXIT_ACCESS_DENIED and str(e.value) == f"{URI}: Secret creds has no AWS_SECRET_ACCESS_KEY"
    creds = Credentials.from_env(URI, None, {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET_VALUE})
    assert creds.region == "us-east-1" and creds.endpoint is None
    assert SECRET_VALUE not in repr(creds) and "AKIAEXAMPLE" not in repr(creds)
