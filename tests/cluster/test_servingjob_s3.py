"""ServingJob from an object store on the real control plane: a Kubeforge artifact uploaded to the
embedded cluster's S3 server is copied into each server pod by the storage initializer (the only
container that gets the Secret's keys) and served; a missing object is ModelNotFound, a wrong key
StorageAccessDenied (both stop the servers rather than crash-loop), a missing Secret is named in one
line, and no credential ever shows in the status, the Events or the pods' logs."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from conftest import Cluster, ObjectStore, condition, pod_logs, wait_for
from kubeforge_trainer.data import digits
from minicluster.kubeapi import ApiError
from minicluster.operator_process import OperatorProcess
from test_servingjob import get, infer, server_ips, write_model

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = [pytest.mark.cluster, pytest.mark.embedded("serves from the embedded cluster's own object store")]
Obj = dict[str, Any]
PREFIX = "models/digits"


def secret(cluster: Cluster, ns: str, name: str, store: ObjectStore, secret_key: str | None = None) -> None:
    data = {"AWS_ACCESS_KEY_ID": store.access_key, "AWS_SECRET_ACCESS_KEY": secret_key or store.secret_key,
            "AWS_ENDPOINT_URL": store.in_cluster_endpoint, "AWS_REGION": store.region}
    cluster.client.create(f"/api/v1/namespaces/{ns}/secrets", {
        "metadata": {"name": name}, "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def serving_job(cluster: Cluster, ns: str, name: str, uri: str, secret_name: str) -> None:
    cluster.client.create(f"/apis/kubeforge.dev/v1alpha1/namespaces/{ns}/servingjobs", {
        "apiVersion": "kubeforge.dev/v1alpha1", "kind": "ServingJob", "metadata": {"name": name},
        "spec": {"model": {"uri": uri, "secretRef": {"name": secret_name}}}})


def upload(client: S3Client, directory: Path, bucket: str, prefix: str) -> None:
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(directory).as_posix()}")


def initializer_logs(cluster: Cluster, ns: str, name: str) -> str:
    """The storage initializer's log of a server pod of `name` whose initializer has exited ("" if none yet)."""
    pods = cluster.client.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=kubeforge.dev%2Fserving-name%3D{name}")
    for pod in pods["items"]:
        for cs in pod.get("status", {}).get("initContainerStatuses") or []:
            if (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated"):
                with contextlib.suppress(ApiError):
                    return pod_logs(cluster, ns, pod["metadata"]["name"], "storage-initializer") or "(empty)"
    return ""


def ready(cluster: Cluster, ns: str, name: str, timeout: float = 240) -> Obj:
    """The ServingJob once Ready; on a timeout, the failure shows its status and its pods'."""
    try:
        return dict(wait_for(lambda: (s := get(cluster, ns, "servingjobs", name)) and
                             (condition(s, "Ready") or {}).get("status") == "True" and s, timeout,
                             what=f"{name} to be Ready"))
    except AssertionError as e:
        pods = cluster.client.get(f"/api/v1/namespaces/{ns}/pods")["items"]
        raise AssertionError(f"{e}\nstatus: {get(cluster, ns, 'servingjobs', name).get('status')}\npods: "
                             f"{[(p['metadata']['name'], p.get('status')) for p in pods]}") from None


def stopped_with(cluster: Cluster, ns: str, name: str) -> Obj:
    return dict(wait_for(lambda: (s := get(cluster, ns, "servingjobs", name)).get("status", {}).get("stopped") and s,
                         180, what=f"{name}'s servers stopped"))


def test_a_kubeforge_artifact_in_an_object_store_is_fetched_and_served(
        cluster: Cluster, operator: OperatorProcess, namespace: str, object_store: ObjectStore, bucket: str,
        tmp_path: Path) -> None:
    model = write_model(tmp_path / "artifact", seed=3)
    upload(object_store.client(), tmp_path / "artifact", bucket, PREFIX)
    secret(cluster, namespace, "store-creds", object_store)
    uri = f"s3://{bucket}/{PREFIX}"
    serving_job(cluster, namespace, "froms3", uri, "store-creds")
    sj = ready(cluster, namespace, "froms3")
    assert sj["status"]["model"] == {"uri": uri, "secretRef": {"name": "store-creds"}}, sj["status"]

    rows = digits().x_eval[:4]
    (ip,) = server_ips(cluster, namespace)
    expected = model(rows).detach().flatten()
    assert torch.allclose(torch.tensor(infer(ip, "froms3", rows.tolist())), expected, atol=1e-4)

    pod = cluster.client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/froms3")["spec"]["template"]["spec"]
    [init], [server] = pod["initContainers"], pod["containers"]
    assert init["name"] == "storage-initializer" and {e["name"] for e in init["env"]} >= {"AWS_SECRET_ACCESS_KEY"}
    assert not [e for e in server.get("env", []) if e["name"].startswith("AWS_") or "valueFrom" in e]
    log = initializer_logs(cluster, namespace, "froms3")
    assert f"{uri}: 2 object(s)" in log and object_store.secret_key not in log, log


def test_a_missing_object_a_refused_key_and_a_missing_secret_say_why_without_a_credential(
        cluster: Cluster, operator: OperatorProcess, namespace: str, object_store: ObjectStore, bucket: str,
        tmp_path: Path) -> None:
    wrong_key = "not-" + uuid.uuid4().hex
    secret(cluster, namespace, "store-creds", object_store)
    secret(cluster, namespace, "bad-creds", object_store, secret_key=wrong_key)
    write_model(tmp_path / "artifact", seed=4)
    upload(object_store.client(), tmp_path / "artifact", bucket, PREFIX)
    missing, present = f"s3://{bucket}/models/nothing", f"s3://{bucket}/{PREFIX}"
    serving_job(cluster, namespace, "missing", missing, "store-creds")
    serving_job(cluster, namespace, "denied", present, "bad-creds")
    serving_job(cluster, namespace, "nosecret", present, "no-such-secret")

    seen_logs: dict[str, str] = {}  # each server's log as first read: a stopped server's pod goes soon after

    def both_logs() -> tuple[str, str] | None:
        for name in ("missing", "denied"):
            if name not in seen_logs and (log := initializer_logs(cluster, namespace, name)):
                seen_logs[name] = log
        return (seen_logs["missing"], seen_logs["denied"]) if len(seen_logs) == 2 else None

    logs = wait_for(both_logs, 180, interval=0.1, what="both initializers' logs")
    assert f"{missing}: no such object" in logs[0], logs
    assert f"{present}: the credentials in Secret bad-creds were refused (SignatureDoesNotMatch)" in logs[1], logs

    ready = condition(stopped_with(cluster, namespace, "missing"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ModelNotFound"), ready
    assert f"{missing}: no such object" in ready["message"], ready
    ready = condition(stopped_with(cluster, namespace, "denied"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "StorageAccessDenied"), ready
    assert "Secret bad-creds were refused" in ready["message"] and present in ready["message"], ready

    nosecret = wait_for(lambda: (c := condition(get(cluster, namespace, "servingjobs", "nosecret"), "Ready"))
                        and "Secret no-such-secret not found" in c["message"] and c, 120,
                        what="Ready=False naming the missing Secret")
    assert nosecret["status"] == "False" and "\n" not in nosecret["message"], nosecret

    seen = json.dumps([get(cluster, namespace, "servingjobs", n) for n in ("missing", "denied", "nosecret")])
    seen += json.dumps(cluster.client.get(f"/api/v1/namespaces/{namespace}/events"))
    seen += "".join(logs)
    for value in (object_store.secret_key, wrong_key, object_store.access_key):
        assert value not in seen, "a credential shows in a status, an Event or a log"
