"""TrainingJob end to end on the real control plane, with the operator under its shipped RBAC."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, Cluster, absent, condition, job, pod_logs, wait_condition, wait_for
from kubeforge_api.curves import MAX_CURVE_POINTS, decode
from minicluster.operator_process import OperatorProcess

Obj = dict[str, Any]
# A fine-tune sample starts from what trainingjob-llm-base.yaml made; make demo runs the pair (test_demo).
NEEDS_ANOTHER_SAMPLE = {"trainingjob-finetune-lora"}
SAMPLES = sorted(s for s in (REPO / "manifests" / "samples").glob("trainingjob-*.yaml")
                 if s.stem not in NEEDS_ANOTHER_SAMPLE)
TJ = "/apis/kubeforge.dev/v1alpha1/namespaces/{ns}/trainingjobs"
TERMINAL = ("Succeeded", "Failed")


def pods_of(cluster: Cluster, ns: str, name: str) -> list[Obj]:
    return list(cluster.client.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=kubeforge.dev%2Fjob-name%3D{name}")[
        "items"])


def command_job(name: str, script: str, nodes: int = 2, **spec: Any) -> Obj:
    return {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"nodes": nodes, "command": ["python", "-c", script], **spec}}


def create_job(cluster: Cluster, ns: str, body: Obj) -> Obj:
    return cluster.client.create(TJ.format(ns=ns), body)


@pytest.mark.parametrize("sample", [pytest.param(s, marks=pytest.mark.embedded(
    "reads the model card through the claim's hostPath on this machine")) if "digits" in s.stem else s
    for s in SAMPLES], ids=[s.stem for s in SAMPLES])
def test_sample_succeeds_with_the_wiring_pods_expect(cluster: Cluster, operator: OperatorProcess, namespace: str,
                                                     sample: Path) -> None:
    doc = next(d for d in yaml.safe_load_all(sample.read_text()) if d["kind"] == "TrainingJob")
    name = doc["metadata"]["name"]
    cluster.kubectl("apply", "-n", namespace, "-f", str(sample))
    obj = wait_for(lambda: (o := job(cluster, namespace, name)).get("status", {}).get("state") in TERMINAL and o,
                   300, what=f"{name} to finish")
    assert obj["status"]["state"] == "Succeeded", obj["status"]
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", f"tj/{name}", "--timeout=10s")
    assert obj["status"]["restartCount"] == 0
    logs = {p["metadata"]["name"]: pod_logs(cluster, namespace, p["metadata"]["name"])
            for p in pods_of(cluster, namespace, name)} if doc["spec"].get("runPolicy", {}).get(
        "cleanPodPolicy") == "None" else {}
    if name == "env-check":
        assert len(logs) == 3
        master_ip = cluster.client.get(f"/api/v1/namespaces/{namespace}/pods/{name}-node-0")["status"]["podIP"]
        for rank in range(3):
            fields = dict(kv.split("=", 1) for kv in logs[f"{name}-node-{rank}"].split())
            assert fields["PET_NODE_RANK"] == str(rank)
            assert fields["PET_NNODES"] == "3" and fields["PET_NPROC_PER_NODE"] == "1"
            assert fields["PET_MASTER_ADDR"] == f"{name}-node-0.{name}-workers.{namespace}.svc.cluster.local"
            assert fields["HOSTNAME"] == f"{name}-node-{rank}"
            assert fields["MASTER_IP"] == master_ip
            assert fields["KUBEFORGE_JOB_UID"] == obj["metadata"]["uid"]
    if name == "digits":
        assert_trained(cluster, namespace, obj)
        assert_describe_is_short(cluster, namespace, name)
    if name == "allreduce" and operator is not None:  # None: the operator runs in the given cluster
        out = operator.tail(400)
        assert "Traceback" not in out


def test_allreduce_ranks_are_all_seen(cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    doc = yaml.safe_load((REPO / "manifests" / "samples" / "trainingjob-torchrun-allreduce.yaml").read_text())
    doc["spec"]["runPolicy"]["cleanPodPolicy"] = "None"
    create_job(cluster, namespace, doc)
    wait_condition(cluster, namespace, "allreduce", "Succeeded", 300)
    lines = [line for p in pods_of(cluster, namespace, "allreduce")
             for line in pod_logs(cluster, namespace, p["metadata"]["name"]).splitlines() if line.startswith("rank=")]
    seen = sorted(int(re.search(r"rank=(\d+)", line).group(1)) for line in lines)  # type: ignore[union-attr]
    assert seen == [0, 1, 2, 3]
    assert all("world=4" in line and "sum=10" in line for line in lines)
    nodes = {re.search(r"node_rank=(\d+) host=(\S+)", line).groups() for line in lines}  # type: ignore[union-attr]
    assert nodes == {("0", "allreduce-node-0"), ("1", "allreduce-node-1")}


def test_worker_killed_by_sigkill_restarts_the_whole_gang_once(cluster: Cluster, operator: OperatorProcess,
                                                               namespace: str) -> None:
    script = ("import os, signal, time\n"
              "time.sleep(1)\n"
              "if os.environ['KUBEFORGE_ATTEMPT'] == '0' and os.environ['PET_NODE_RANK'] == '1':\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "time.sleep(2 if os.environ['KUBEFORGE_ATTEMPT'] == '0' else 0)\n"
              "print('attempt', os.environ['KUBEFORGE_ATTEMPT'])\n")
    create_job(cluster, namespace, command_job("sigkill", script, 2, runPolicy={"cleanPodPolicy": "None"}))
    obj = wait_condition(cluster, namespace, "sigkill", "Succeeded", 180)
    st = obj["status"]
    assert st["restartCount"] == 1
    assert st["lastFailure"]["pod"] == "sigkill-node-1" and st["lastFailure"]["exitCode"] == 137
    assert condition(obj, "Restarting")["status"] == "False"  # type: ignore[index]
    pods = pods_of(cluster, namespace, "sigkill")
    assert sorted(p["metadata"]["labels"]["kubeforge.dev/attempt"] for p in pods) == ["1", "1"]
    assert all(pod_logs(cluster, namespace, p["metadata"]["name"]).strip() == "attempt 1" for p in pods)
    reasons = [e["reason"] for e in cluster.client.get(
        f"/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.name%3Dsigkill")["items"]]
    assert "GangRestart" in reasons and "Completed" in reasons


def test_worker_exiting_1_fails_the_job_naming_pod_and_code(cluster: Cluster, operator: OperatorProcess,
                                                            namespace: str) -> None:
    script = ("import os, sys, time\n"
              "if os.environ['PET_NODE_RANK'] == '1':\n"
              "    print('bad hyper-parameters', file=sys.stderr); sys.exit(1)\n"
              "time.sleep(600)\n")
    create_job(cluster, namespace, command_job("exit1", script, 2))
    obj = wait_condition(cluster, namespace, "exit1", "Failed", 120)
    st = obj["status"]
    assert st["state"] == "Failed" and st["reason"] == "ExitCode" and st["restartCount"] == 0
    assert st["lastFailure"]["pod"] == "exit1-node-1" and st["lastFailure"]["exitCode"] == 1
    assert "bad hyper-parameters" in st["lastFailure"]["message"]
    assert "exit1-node-1" in condition(obj, "Failed")["message"]  # type: ignore[index]
    # cleanPodPolicy Running (the default): the running peer goes, the failed pod stays for its logs.
    wait_for(lambda: [p["metadata"]["name"] for p in pods_of(cluster, namespace, "exit1")] == ["exit1-node-1"], 60,
             what="running pods cleaned up")
    out = cluster.kubectl("get", "tj", "-n", namespace).stdout
    assert re.search(r"exit1\s+Failed\s+2", out), out
    logs = cluster.kubectl("logs", "exit1-node-1", "-n", namespace).stdout  # the pod that failed kept its logs
    assert "bad hyper-parameters" in logs
    transitions = [line for line in operator.log_path.read_text(errors="replace").splitlines()
                   if f"TrainingJob {namespace}/exit1: " in line]  # one info line per change of state
    assert any("-> Failed: " in line and "exit1-node-1" in line for line in transitions), transitions


def test_the_trainers_own_reason_and_exit_code_reach_describe_and_events(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    """A recipe whose dataset file is missing: the trainer's one-line reason and its exit code 78
    (configuration error, carried through torchrun, never retried) are what `kubectl describe` and
    the job's Warning event say, not torchrun's ChildFailedError banner."""
    body = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "nodata"},
            "spec": {"nodes": 2, "recipe": {"model": "gpt", "dataset": "file", "datasetPath": "corpus/missing.txt"}}}
    create_job(cluster, namespace, body)
    st = wait_condition(cluster, namespace, "nodata", "Failed", 180)["status"]
    assert (st["reason"], st["restartCount"], st["lastFailure"]["exitCode"]) == ("ExitCode", 0, 78)
    assert "does not exist" in st["lastFailure"]["message"]
    desc = cluster.kubectl("describe", "tj", "nodata", "-n", namespace).stdout
    assert "does not exist" in desc and "code 78" in desc and "ChildFailedError" not in desc, desc
    events = cluster.client.get(f"/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.name%3Dnodata")
    assert any(e["type"] == "Warning" and "does not exist" in e["message"] for e in events["items"]), events


def test_a_users_exception_under_torchrun_is_the_cause_describe_shows(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    """A command job's script raises under torchrun: `kubectl describe` and the Warning event say
    `ZeroDivisionError: division by zero`, not the banner torchrun ends the log with."""
    body = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "zerodiv"},
            "spec": {"nodes": 1, "command": ["python", "-m", "torch.distributed.run", "--nproc-per-node", "1",
                                             "--no-python", "python", "-c", "import sys; sys.stdout.flush(); 1/0"]}}
    create_job(cluster, namespace, body)
    obj = wait_condition(cluster, namespace, "zerodiv", "Failed", 180)
    assert condition(obj, "Failed")["message"].endswith("ZeroDivisionError: division by zero"), obj["status"]
    desc = cluster.kubectl("describe", "tj", "zerodiv", "-n", namespace).stdout
    assert "ZeroDivisionError: division by zero" in desc, desc
    events = cluster.client.get(f"/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.name%3Dzerodiv")
    assert any(e["type"] == "Warning" and "ZeroDivisionError" in e["message"] for e in events["items"]), events


REPORTING_SCRIPT = """
import time
from kubeforge_trainer.report import Report
report = Report(total_steps=4, batch_size=8)
for step in (1, 2):
    report.step(step, loss=1.0 / step)
time.sleep(8)  # the operator polls rank 0 every few seconds: it sees step 2 while the job runs
for step in (3, 4):
    report.step(step, loss=1.0 / step)
report.evaluate(4, accuracy=0.75, evalLoss=0.5)
report.finish()
"""


def test_a_command_jobs_script_reports_progress_and_metrics_like_a_recipe(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    create_job(cluster, namespace, command_job("reporting", REPORTING_SCRIPT, 1))
    live = wait_for(lambda: (st := cluster.client.get(TJ.format(ns=namespace) + "/reporting").get("status") or {})
                    and (st.get("progress") or {}).get("step") == 2 and st, 60, what="progress while it runs")
    assert live["state"] == "Running" and live["progress"]["percent"] == "50.0%", live
    st = wait_condition(cluster, namespace, "reporting", "Succeeded", 60)["status"]
    assert st["progress"]["step"] == 4 and st["metric"] == "accuracy 0.75", st
    assert [step for step, _ in decode(st["history"]["loss"])] == [1, 2, 3, 4], st["history"]
    logs = cluster.kubectl("logs", "reporting-node-0", "-n", namespace).stdout
    assert "kubeforge: step 4/4: accuracy 0.75 evalLoss 0.5" in logs, logs


def test_gpu_job_on_a_cluster_without_enough_gpus_is_unschedulable_then_fails(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    body = command_job("gpus", "print('never')", 2, resources={"limits": {"nvidia.com/gpu": 8}},
                       runPolicy={"startupDeadlineSeconds": 8})
    create_job(cluster, namespace, body)

    def unschedulable() -> Obj | None:
        obj = job(cluster, namespace, "gpus")
        c = condition(obj, "Running")
        return obj if c and c["reason"] == "Unschedulable" else None

    obj = wait_for(unschedulable, 60, what="Running=False/Unschedulable")
    assert "nvidia.com/gpu" in condition(obj, "Running")["message"]  # type: ignore[index]
    out = cluster.kubectl("get", "tj", "gpus", "-n", namespace).stdout  # the default columns say Pending
    assert re.search(r"gpus\s+Pending\s+2\s", out), out
    assert re.search(r"gpus\s+Pending\s+.*\sUnschedulable", cluster.kubectl(
        "get", "tj", "gpus", "-n", namespace, "-o", "wide").stdout)
    assert obj["status"]["replicaStatuses"]["node"] == {"pending": 2}  # counts of 0 are left out
    desc = cluster.kubectl("describe", "tj", "gpus", "-n", namespace).stdout
    assert "Unschedulable" in desc
    obj = wait_condition(cluster, namespace, "gpus", "Failed", 60, reason="StartupDeadlineExceeded")
    assert "Unschedulable" in condition(obj, "Failed")["message"] or "nvidia.com/gpu" in condition(  # type: ignore[index]
        obj, "Failed")["message"]  # type: ignore[index]
    wait_for(lambda: not pods_of(cluster, namespace, "gpus"), 60, what="pods removed")


def test_active_deadline_fails_the_job_and_removes_its_pods(cluster: Cluster, operator: OperatorProcess,
                                                            namespace: str) -> None:
    create_job(cluster, namespace, command_job("slow", "import time; time.sleep(600)", 2,
                                               runPolicy={"activeDeadlineSeconds": 5, "cleanPodPolicy": "None"}))
    wait_condition(cluster, namespace, "slow", "Running", 60)
    obj = wait_condition(cluster, namespace, "slow", "Failed", 60, reason="DeadlineExceeded")
    assert obj["status"]["state"] == "Failed"
    wait_for(lambda: not pods_of(cluster, namespace, "slow"), 60, what="pods gone after the deadline")


def test_suspend_deletes_pods_and_resume_recreates_them(cluster: Cluster, operator: OperatorProcess,
                                                        namespace: str) -> None:
    create_job(cluster, namespace, command_job("pausable", "import time; time.sleep(600)", 2))
    wait_condition(cluster, namespace, "pausable", "Running", 60)
    path = TJ.format(ns=namespace) + "/pausable"
    cluster.client.patch(path, {"spec": {"runPolicy": {"suspend": True}}})
    obj = wait_condition(cluster, namespace, "pausable", "Suspended", 60)
    assert obj["status"]["state"] == "Suspended"
    wait_for(lambda: not pods_of(cluster, namespace, "pausable"), 60, what="pods deleted while suspended")
    cluster.client.patch(path, {"spec": {"runPolicy": {"suspend": False}}})
    obj = wait_condition(cluster, namespace, "pausable", "Running", 60)
    assert condition(obj, "Suspended")["status"] == "False"  # type: ignore[index]
    assert obj["status"]["restartCount"] == 0
    assert len(pods_of(cluster, namespace, "pausable")) == 2


def test_ttl_deletes_a_finished_job_and_cleanup_policy_all_removes_pods(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    create_job(cluster, namespace, command_job("brief", "print('done')", 1,
                                               runPolicy={"ttlSecondsAfterFinished": 3, "cleanPodPolicy": "All"}))
    wait_condition(cluster, namespace, "brief", "Succeeded", 60)
    wait_for(lambda: not pods_of(cluster, namespace, "brief"), 30, what="cleanPodPolicy All")

    wait_for(lambda: absent(cluster, TJ.format(ns=namespace) + "/brief"), 30, what="TTL deletion")


def test_deleting_a_job_removes_all_children(cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    create_job(cluster, namespace, command_job("doomed", "import time; time.sleep(600)", 3))
    wait_condition(cluster, namespace, "doomed", "Running", 60)
    assert cluster.client.get(f"/api/v1/namespaces/{namespace}/services/doomed-workers")["spec"]["clusterIP"] == "None"
    cluster.kubectl("delete", "tj", "doomed", "-n", namespace, "--wait=false")
    wait_for(lambda: not pods_of(cluster, namespace, "doomed"), 60, what="pods garbage-collected")

    wait_for(lambda: absent(cluster, f"/api/v1/namespaces/{namespace}/services/doomed-workers"), 60,
             what="service garbage-collected")


def test_status_fields_and_printer_columns(cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    create_job(cluster, namespace, command_job("cols", "import time; time.sleep(600)", 2))
    obj = wait_condition(cluster, namespace, "cols", "Running", 60)
    st = obj["status"]
    assert st["observedGeneration"] == obj["metadata"]["generation"]
    assert st["replicaStatuses"] == {"node": {"active": 2}}
    assert st["startTime"] and st["state"] == "Running"
    out = cluster.kubectl("get", "tj", "-n", namespace, "-o", "wide").stdout
    assert re.search(r"cols\s+Running\s+2\s+.*\s0\s", out), out
    assert json.loads(cluster.kubectl("get", "kubeforge", "-n", namespace, "-o", "json").stdout)["items"]


# Was 340: 236 of them status.history, then 107 with the defaults of spec.recipe and spec.runPolicy,
# a Created condition, pod counts of 0 and a finished job's ETA; 80-83 then (the issue: "about 80"),
# and one more for status.metric (the job's accuracy, also a printer column).
DESCRIBE_LINES = 85


def assert_describe_is_short(cluster: Cluster, namespace: str, name: str) -> None:
    """`kubectl describe` (the real one) of a finished recipe job prints each curve of
    status.history on one line, stays within DESCRIBE_LINES, and still says the state, the loss
    curve and the artifact."""
    out = cluster.kubectl("describe", "tj", name, "-n", namespace).stdout
    lines = out.splitlines()
    print(f"kubectl describe tj/{name}: {len(lines)} lines")
    history = lines.index("  History:")
    end = next(i for i in range(history + 1, len(lines)) if not lines[i].startswith("    "))
    curves = [line.split(":")[0].strip() for line in lines[history + 1 : end]]
    # The throughput curve comes only from progress polls, which a short run on a busy machine can miss.
    assert curves in (["Accuracy", "Eval Loss", "Loss"], ["Accuracy", "Eval Loss", "Loss", "Samples Per Second"]), out
    assert lines[end].startswith("  Last Checkpoint:"), out  # nothing more of the history
    assert len(lines) <= DESCRIBE_LINES + len(curves) - 3, out  # the optional throughput curve is one line more
    assert "Succeeded" in out and "pvc://training-data/runs/digits/artifact" in out


def assert_trained(cluster: Cluster, namespace: str, obj: Obj) -> None:
    """A recipe job that succeeded reports progress, curves, its last checkpoint and its artifact."""
    st = obj["status"]
    assert st["progress"]["step"] == st["progress"]["totalSteps"] > 0 and st["progress"]["percent"] == "100.0%"
    assert st["progress"]["eval"]["accuracy"] >= 0.9
    loss = decode(st["history"]["loss"])
    assert 0 < len(loss) <= MAX_CURVE_POINTS and loss[-1][0] == st["progress"]["step"]
    per_epoch = st["progress"]["totalSteps"] // 8  # the sample trains 8 epochs; each ends with an eval point
    assert [step for step, _ in decode(st["history"]["accuracy"])] == [per_epoch * e for e in range(1, 9)]
    assert st["lastCheckpoint"]["step"] > 0
    assert st["metric"] == f"accuracy {st['progress']['eval']['accuracy']:.4g}"
    row = cluster.kubectl("get", "tj", obj["metadata"]["name"], "-n", namespace).stdout
    assert re.search(r"100\.0%\s+accuracy 0\.\d+\s+0\s", row), row  # Progress, Metric, Restarts
    art = st["artifact"]
    assert art["uri"] == "pvc://training-data/runs/digits/artifact" and art["digest"].startswith("sha256:")
    pvc = cluster.client.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/training-data")
    pv = cluster.client.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    host = Path(pv["spec"]["hostPath"]["path"])
    card = json.loads((host / "runs/digits/artifact/model-card.json").read_text())
    assert card["weights"]["digest"] == art["digest"]
    assert card["lineage"]["uid"] == obj["metadata"]["uid"] and card["lineage"]["trainingJob"] == "digits"
