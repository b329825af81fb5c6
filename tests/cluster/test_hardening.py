"""What a job author cannot do to the operator: make it retry a refused create forever, preempt other
tenants with a priority class the settings do not allow, steer a ServingJob onto tainted nodes,
hijack a job's rendezvous with a pre-created object, get it to act in kube-system, or grow it
past its memory limit with the largest jobs admission lets through."""

from __future__ import annotations

import time

from conftest import ALLOWED_PRIORITY_CLASS, Cluster, condition, job, wait_condition, wait_for
from minicluster.operator_process import OperatorProcess
from test_trainingjob import TJ, command_job, create_job, pods_of


def test_a_pod_the_api_server_refuses_fails_the_job_with_its_words(cluster: Cluster, operator: OperatorProcess,
                                                                   namespace: str) -> None:
    create_job(cluster, namespace, command_job("vip", "print()", 1,
                                               podTemplate={"priorityClassName": ALLOWED_PRIORITY_CLASS}))
    obj = wait_condition(cluster, namespace, "vip", "Failed", 60)
    failed = condition(obj, "Failed")
    assert failed is not None and failed["reason"] == "CreateRejected", obj["status"]
    assert "PriorityClass" in failed["message"] and ALLOWED_PRIORITY_CLASS in failed["message"]
    assert not pods_of(cluster, namespace, "vip")


def test_a_priority_class_the_settings_do_not_allow_fails_the_job_before_any_pod(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    create_job(cluster, namespace, command_job("preempt", "print()", 1,
                                               podTemplate={"priorityClassName": "system-node-critical"}))
    obj = wait_condition(cluster, namespace, "preempt", "Failed", 60)
    failed = condition(obj, "Failed")
    assert failed is not None and failed["reason"] == "PodPolicyViolation", obj["status"]
    assert failed["message"].startswith("spec.podTemplate.priorityClassName: 'system-node-critical'"), failed
    assert not pods_of(cluster, namespace, "preempt")
    events = cluster.client.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    assert any(e["reason"] == "PodPolicyViolation" and e["type"] == "Warning" for e in events), events


def test_a_precreated_service_of_the_same_name_is_a_name_conflict_not_a_rendezvous(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    """Someone else's Service under the gang's name (`<job>-workers`) would route the rendezvous to
    them: the job fails NameConflict instead."""
    cluster.client.create(f"/api/v1/namespaces/{namespace}/services", {
        "metadata": {"name": "victim-workers"}, "spec": {"clusterIP": "None", "ports": [{"port": 29500}]}})
    create_job(cluster, namespace, command_job("victim", "import time; time.sleep(60)", 2))
    obj = wait_condition(cluster, namespace, "victim", "Failed", 60)
    failed = condition(obj, "Failed")
    assert failed is not None and failed["reason"] == "NameConflict", obj["status"]
    assert "Service victim-workers already exists" in failed["message"]
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


def test_twenty_of_the_largest_jobs_admitted_leave_the_operator_well_under_its_memory_limit(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    """The attack of 20 suspended 1.3 MB jobs, as far as admission now lets it go: every free-text
    field at the admission policy's caps. The operator stays up, under 512 MiB, and other jobs run."""
    annotations = {f"example.com/a{i}": "x" * 4000 for i in range(4)}
    for i in range(20):
        create_job(cluster, namespace, command_job(f"big-{i}", "print()", 1, args=["y" * 4000] * 15,
                                                   runPolicy={"suspend": True},
                                                   podTemplate={"annotations": annotations}))
    create_job(cluster, namespace, command_job("small", "print('fine')", 1))
    wait_condition(cluster, namespace, "small", "Succeeded", 120)
    assert all(job(cluster, namespace, f"big-{i}")["status"]["state"] == "Suspended" for i in range(20))
    assert operator.proc is not None and operator.proc.poll() is None
    peak = operator.check_memory()
    print(f"operator peak RSS {peak / 2**20:.0f} MiB")
    assert peak < 256 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"  # far below the limit, not just under it


def test_a_servingjob_asking_for_a_forbidden_toleration_rolls_nothing_out(cluster: Cluster, operator: OperatorProcess,
                                                                         namespace: str) -> None:
    path = f"/apis/kubeforge.dev/v1alpha1/namespaces/{namespace}/servingjobs"
    cluster.client.create(path, {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "ServingJob",
                                 "metadata": {"name": "tainted"},
                                 "spec": {"model": {"uri": "pvc://models/m"}, "podTemplate": {"tolerations": [
                                     {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}}})

    def ready() -> dict[str, str] | None:
        status = cluster.client.get(f"{path}/tainted").get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)

    cond = wait_for(ready, 60, what="the ServingJob's Ready condition")
    assert (cond["status"], cond["reason"]) == ("False", "PodPolicyViolation"), cond
    assert cond["message"].startswith("spec.podTemplate.tolerations[0].key: toleration key "
                                      "'node-role.kubernetes.io/control-plane'"), cond
    deployments = cluster.client.get(f"/apis/apps/v1/namespaces/{namespace}/deployments")["items"]
    assert not deployments
