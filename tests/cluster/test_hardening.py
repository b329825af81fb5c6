"""What a job author cannot do to the operator: make it retry a refused create forever, hijack a
job's rendezvous with a pre-created object, or get it to act in kube-system."""

from __future__ import annotations

import time

from conftest import Cluster, condition, job, wait_condition
from minicluster.operator_process import OperatorProcess
from test_trainingjob import TJ, command_job, create_job, pods_of


def test_a_pod_the_api_server_refuses_fails_the_job_with_its_words(cluster: Cluster, operator: OperatorProcess,
                                                                   namespace: str) -> None:
    create_job(cluster, namespace, command_job("vip", "print()", 1,
                                               podTemplate={"priorityClassName": "does-not-exist"}))
    obj = wait_condition(cluster, namespace, "vip", "Failed", 60)
    failed = condition(obj, "Failed")
    assert failed is not None and failed["reason"] == "CreateRejected", obj["status"]
    assert "PriorityClass" in failed["message"] and "does-not-exist" in failed["message"]
    assert not pods_of(cluster, namespace, "vip")


def test_a_precreated_service_of_the_same_name_is_a_name_conflict_not_a_rendezvous(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    cluster.client.create(f"/api/v1/namespaces/{namespace}/services", {
        "metadata": {"name": "victim"}, "spec": {"clusterIP": "None", "ports": [{"port": 29500}]}})
    create_job(cluster, namespace, command_job("victim", "import time; time.sleep(60)", 2))
    obj = wait_condition(cluster, namespace, "victim", "Failed", 60)
    failed = condition(obj, "Failed")
    assert failed is not None and failed["reason"] == "NameConflict", obj["status"]
    assert "Service victim already exists" in failed["message"]
    assert not pods_of(cluster, namespace, "victim")  # the gang never started against the impostor


def test_jobs_in_kube_system_are_never_acted_on(cluster: Cluster, operator: OperatorProcess) -> None:
    create_job(cluster, "kube-system", command_job("sneaky", "print()", 1))
    try:
        time.sleep(5)
        assert "status" not in job(cluster, "kube-system", "sneaky") or not job(cluster, "kube-system", "sneaky")[
            "status"]
        assert not pods_of(cluster, "kube-system", "sneaky")
    finally:
        cluster.client.delete(TJ.format(ns="kube-system") + "/sneaky")
