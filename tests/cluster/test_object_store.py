"""The embedded cluster's S3-compatible object store (SeaweedFS, see minicluster/objectstore.py):
boto3 from this machine creates buckets, puts and gets objects (a multipart upload included) with
the cluster's keys and is refused without them, and a pod reaches the store at its in-cluster
endpoint with the keys from a Secret."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError
from conftest import Cluster, ObjectStore, pod_logs, pod_phase, wait_for

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

pytestmark = [pytest.mark.cluster, pytest.mark.embedded("the embedded cluster's own object store")]

MIB = 1024 * 1024
PART = 5 * MIB  # S3's smallest part but the last


def test_put_get_list_and_a_multipart_upload_from_this_machine(object_store: ObjectStore, bucket: str) -> None:
    client = object_store.client()
    assert bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]
    client.put_object(Bucket=bucket, Key="models/small.txt", Body=b"hello object store\n")
    assert client.get_object(Bucket=bucket, Key="models/small.txt")["Body"].read() == b"hello object store\n"

    data = os.urandom(4 * PART)  # ~20 MB in four parts
    upload = client.create_multipart_upload(Bucket=bucket, Key="models/big.bin")["UploadId"]
    parts: list[CompletedPartTypeDef] = []
    for n in range(4):
        etag = client.upload_part(Bucket=bucket, Key="models/big.bin", UploadId=upload, PartNumber=n + 1,
                                  Body=data[n * PART:(n + 1) * PART])["ETag"]
        parts.append({"ETag": etag, "PartNumber": n + 1})
    client.complete_multipart_upload(Bucket=bucket, Key="models/big.bin", UploadId=upload,
                                     MultipartUpload={"Parts": parts})
    head = client.head_object(Bucket=bucket, Key="models/big.bin")
    assert head["ContentLength"] == len(data) and head["ETag"].strip('"').endswith("-4"), head
    got = client.get_object(Bucket=bucket, Key="models/big.bin")["Body"].read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    ranged = client.get_object(Bucket=bucket, Key="models/big.bin", Range=f"bytes={PART - 3}-{PART + 2}")
    assert ranged["Body"].read() == data[PART - 3:PART + 3]  # across the first two parts' seam

    listed = client.list_objects_v2(Bucket=bucket, Prefix="models/")
    assert sorted((o["Key"], o["Size"]) for o in listed["Contents"]) == [
        ("models/big.bin", len(data)), ("models/small.txt", 19)]


def _refusal(call: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as refused:
        call()
    response = refused.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_requests_without_the_clusters_keys_are_refused(object_store: ObjectStore, bucket: str) -> None:
    object_store.client().put_object(Bucket=bucket, Key="secret.txt", Body=b"not for everyone")
    wrong_secret = object_store.client(secret_key="not-the-secret-key")
    assert _refusal(wrong_secret.list_buckets) == (403, "SignatureDoesNotMatch")
    assert _refusal(lambda: wrong_secret.get_object(Bucket=bucket, Key="secret.txt"))[0] == 403
    assert _refusal(lambda: wrong_secret.put_object(Bucket=bucket, Key="x", Body=b"x"))[0] == 403
    unknown_key = object_store.client(access_key="KFUNKNOWNACCESSKEY")
    assert _refusal(unknown_key.list_buckets) == (403, "InvalidAccessKeyId")
    anonymous = object_store.client(unsigned=True)
    assert _refusal(lambda: anonymous.get_object(Bucket=bucket, Key="secret.txt"))[0] == 403
    assert [o["Key"] for o in object_store.client().list_objects_v2(Bucket=bucket)["Contents"]] == ["secret.txt"]


# Runs in a pod: reads argv[1]/argv[2] from the store, prints its size and digest, writes a reply.
POD_CLIENT = """
import hashlib, os, sys
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"], region_name=os.environ["AWS_REGION"],
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}))
body = s3.get_object(Bucket=sys.argv[1], Key=sys.argv[2])["Body"].read()
print(len(body), hashlib.sha256(body).hexdigest(), flush=True)
s3.put_object(Bucket=sys.argv[1], Key="from-pod.txt", Body=os.environ["HOSTNAME"].encode())
"""


def test_a_pod_reads_and_writes_objects_at_the_in_cluster_endpoint(
        cluster: Cluster, namespace: str, object_store: ObjectStore, bucket: str) -> None:
    data = os.urandom(3 * MIB + 17)
    object_store.client().put_object(Bucket=bucket, Key="datasets/train.bin", Body=data)
    cluster.client.create(f"/api/v1/namespaces/{namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"},
        "stringData": {"AWS_ACCESS_KEY_ID": object_store.access_key,
                       "AWS_SECRET_ACCESS_KEY": object_store.secret_key}})
    cluster.client.create(f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "python:3.11",
            "command": ["python", "-c", POD_CLIENT, bucket, "datasets/train.bin"],
            "envFrom": [{"secretRef": {"name": "s3"}}],
            "env": [{"name": "S3_ENDPOINT", "value": object_store.in_cluster_endpoint},
                    {"name": "AWS_REGION", "value": object_store.region}]}]}})
    phase = wait_for(lambda: (lambda p: p if p in ("Succeeded", "Failed") else None)(
        pod_phase(cluster, namespace, "reader")), timeout=120, what="the reader pod to finish")
    logs = pod_logs(cluster, namespace, "reader")
    assert phase == "Succeeded", logs
    assert logs.split() == [str(len(data)), hashlib.sha256(data).hexdigest()], logs
    reply = object_store.client().get_object(Bucket=bucket, Key="from-pod.txt")["Body"].read()
    assert reply == b"reader"
