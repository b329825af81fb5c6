"""Pure rendering of a TrainingJob's children: one headless Service and one bare pod per
(role, rank), with deterministic names so a restarted operator can never create a duplicate and
the API server itself refuses a second live pod for the same rank."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubeforge_api.compression import CompressEnv, request_threads
from kubeforge_api.constants import (
    CONTAINER_NAME,
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    LABEL_RANK,
    LABEL_ROLE,
    MANAGED_BY,
    PROGRESS_PORT,
    RENDEZVOUS_PORT,
    ROLE_COMPRESS,
    ROLE_NODE,
    ROLE_PS,
    ROLE_PUBLISH,
    STORAGE_MOUNT,
    Env,
)
from kubeforge_api.finetune import DATA_ENV, EVAL_DATA_ENV, MODEL_DIR_ENV, Finetune
from kubeforge_api.trainingjob import Strategy, TrainingJobSpec

from ..plan import ObjectRef
from .common import owner_reference, restricted_container_security, restricted_pod_security
from .storage import attach, credential_env

Obj = dict[str, Any]
KIND = "TrainingJob"
TRAINER_COMMAND = ["python", "-m", "kubeforge_trainer", "launch"]  # torchrun in-process; keeps the rank's exit code
# A command job on the trainer image runs under this wrapper: it records what the script saved to
# $KUBEFORGE_OUTPUT_DIR as the artifact (a custom image may not have it: its command runs as given).
COMMAND_WRAPPER = ["python", "-m", "kubeforge_trainer.command", "--"]
PUBLISH_COMMAND = ["python", "-m", "kubeforge_trainer.publish"]
OUTPUT_DIR = f"{STORAGE_MOUNT}/artifact"
COMPRESS_COMMAND = ["python", "-m", "kubeforge_trainer", "compress"]
GPU_RESOURCE = "nvidia.com/gpu"
# Elastic rendezvous: a resize waits 1 s for late joiners (torchrun's default last call, 30 s, would add
# half a minute to every resize); an attempt's pods have 5 minutes to reach minNodes.
RDZV_LAST_CALL_SECONDS = 1
RDZV_JOIN_TIMEOUT_SECONDS = 300
# A dead agent stays a participant of the finished round until it misses 3 keep-alives; the survivors'
# next round waits for that (torchrun's default 5 s interval made it 15 s).
RDZV_KEEP_ALIVE_SECONDS = 1
# torchrun's agents share the rendezvous TCP store with the workers by default, but a node that joins
# a later round (a scale-out) then waits for a master address that rank 0 only wrote in its first
# round, and the round fails: elastic workers get their own store each round instead.
UNSHARED_RDZV_STORE = ("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")


@dataclass(frozen=True)
class Member:
    """One pod of the gang."""

    role: str
    rank: int  # index within the role
    node_rank: int  # torchrun node rank across the whole world


def pod_name(job: str, role: str, rank: int) -> str:
    return f"{job}-{role}-{rank}"


def members(spec: TrainingJobSpec) -> list[Member]:
    """Worker pods first (node ranks 0..n-1), then parameter servers (n..n+p-1)."""
    nodes = [Member(ROLE_NODE, i, i) for i in range(spec.nodes)]
    servers = [Member(ROLE_PS, i, spec.nodes + i) for i in range(spec.parameter_servers)]
    return nodes + servers


def service_name(job: str) -> str:
    """The gang's headless Service: not the job's own name, which a ServingJob of the same name takes."""
    return f"{job}-workers"


def pod_address(job: ObjectRef, role: str, rank: int) -> str:
    """A gang member's stable DNS name (its hostname under the headless Service)."""
    return f"{pod_name(job.name, role, rank)}.{service_name(job.name)}.{job.namespace}.svc.cluster.local"


def master_addr(job: ObjectRef) -> str:
    return pod_address(job, ROLE_NODE, 0)


def selector_labels(job: ObjectRef) -> dict[str, str]:
    return {LABEL_JOB: job.name}


def render_service(job: ObjectRef) -> Obj:
    """Headless, publishing not-ready pods: rank 0's name must resolve before anyone is ready."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name(job.name), "namespace": job.namespace,
                     "labels": {**selector_labels(job), LABEL_MANAGED_BY: MANAGED_BY},
                     "ownerReferences": [owner_reference(job, KIND)]},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": selector_labels(job),
                 "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT},
                           {"name": "progress", "port": PROGRESS_PORT, "targetPort": PROGRESS_PORT}]},
    }


def rendezvous_conf(member: Member) -> str:
    """torchrun's `--rdzv-conf` for an elastic member: short last call and keep-alive, bounded join, node rank 0's
    agent hosts the c10d store at the rendezvous endpoint (its own DNS name; no hostname guessing).
    Agents rank by their `--local-addr` (the pod's DNS name), so node rank 0 is global rank 0."""
    host = "true" if member.role == ROLE_NODE and member.rank == 0 else "false"
    return (f"join_timeout={RDZV_JOIN_TIMEOUT_SECONDS},last_call_timeout={RDZV_LAST_CALL_SECONDS},"
            f"close_timeout=10,keep_alive_interval={RDZV_KEEP_ALIVE_SECONDS},keep_alive_max_attempt=3,"
            f"is_host={host}")


def _env(job: ObjectRef, spec: TrainingJobSpec, member: Member, attempt: int) -> list[Obj]:
    world_nodes = spec.nodes + spec.parameter_servers
    gpu = spec.resources.gpus > 0
    env: dict[str, str] = {
        Env.NNODES: f"{spec.elastic.min_nodes}:{spec.elastic.max_nodes}" if spec.elastic else str(world_nodes),
        Env.NPROC_PER_NODE: str(spec.procs_per_node),
        Env.NODE_RANK: str(member.node_rank),
        Env.MASTER_ADDR: master_addr(job),
        Env.MASTER_PORT: str(RENDEZVOUS_PORT),
        Env.JOB_NAME: job.name, Env.JOB_NAMESPACE: job.namespace, Env.JOB_UID: job.uid,
        Env.JOB_GENERATION: str(job.generation),
        Env.ROLE: member.role, Env.ROLE_RANK: str(member.rank), Env.ATTEMPT: str(attempt),
        Env.STRATEGY: spec.strategy.value, Env.NUM_NODES: str(spec.nodes),
        Env.NUM_PARAMETER_SERVERS: str(spec.parameter_servers),
        Env.STORAGE_DIR: STORAGE_MOUNT, Env.PROGRESS_PORT: str(PROGRESS_PORT),
        Env.DIST_BACKEND: "nccl" if gpu else "gloo",
        Env.SPEC: json.dumps(spec.dump(), sort_keys=True, separators=(",", ":")),
    }
    if spec.elastic:
        env[Env.RDZV_BACKEND] = "c10d"
        env[Env.RDZV_ENDPOINT] = f"{master_addr(job)}:{RENDEZVOUS_PORT}"
        env[Env.RDZV_ID] = f"{job.uid}-{attempt}"  # an old attempt's rank can never join this one's rendezvous
        env[Env.MAX_RESTARTS] = str(spec.elastic.max_restarts)
        env[Env.RDZV_CONF] = rendezvous_conf(member)
        env[Env.LOCAL_ADDR] = pod_address(job, member.role, member.rank)
        env[UNSHARED_RDZV_STORE[0]] = UNSHARED_RDZV_STORE[1]
    if spec.command is not None and member.role == ROLE_NODE and member.rank == 0:
        env[Env.OUTPUT_DIR] = OUTPUT_DIR
    if spec.strategy == Strategy.PARAMETER_SERVER:
        env[Env.PS_ADDRESSES] = ",".join(
            pod_address(job, ROLE_PS, i)
            for i in range(spec.parameter_servers))
    user = [{"name": e.name, "value": e.value} for e in spec.env]
    cpu_limit = {"name": Env.CPU_LIMIT_MILLICORES, "valueFrom": {"resourceFieldRef": {  # threads fit the pod
        "containerName": CONTAINER_NAME, "resource": "limits.cpu", "divisor": "1m"}}}
    return [{"name": str(k), "value": v} for k, v in env.items()] + [cpu_limit] + user


def _command(spec: TrainingJobSpec) -> list[str]:
    if spec.command is None:
        return TRAINER_COMMAND
    return [*COMMAND_WRAPPER, *spec.command] if spec.image is None else list(spec.command)


def _attach_finetune_inputs(pod_spec: Obj, finetune: Finetune, image: str) -> None:
    """The base model, the data and the eval data of a fine-tune, each at the path its env names."""
    inputs = [("base-model", MODEL_DIR_ENV, finetune.model, True), ("train-data", DATA_ENV, finetune.data, False)]
    if finetune.eval_data is not None:
        inputs.append(("eval-data", EVAL_DATA_ENV, finetune.eval_data, False))
    for volume, env, source, is_directory in inputs:
        secret = source.secret_ref.name if source.secret_ref else None
        path = attach(pod_spec, volume, source.uri, secret, is_directory, image)
        pod_spec["containers"][0]["env"].append({"name": env, "value": path})


def render_pod(job: ObjectRef, spec: TrainingJobSpec, member: Member, attempt: int, default_image: str,
               shm_size: str) -> Obj:
    name = pod_name(job.name, member.role, member.rank)
    tmpl = spec.pod_template
    labels = {**tmpl.labels, **selector_labels(job), LABEL_ROLE: member.role, LABEL_RANK: str(member.rank),
              LABEL_ATTEMPT: str(attempt), LABEL_MANAGED_BY: MANAGED_BY}
    storage: Obj = {"name": "storage", "emptyDir": {}}
    sub_path = job.name
    if spec.storage and spec.storage.persistent_volume_claim:
        storage = {"name": "storage",
                   "persistentVolumeClaim": {"claimName": spec.storage.persistent_volume_claim.claim_name}}
        sub_path = spec.storage.path or job.name
    resources = spec.resources.dump()
    if member.role == ROLE_PS:  # servers hold parameters in memory; they never need a GPU
        resources = {k: {r: q for r, q in v.items() if r != GPU_RESOURCE} for k, v in resources.items()}
    container: Obj = {
        "name": CONTAINER_NAME,
        "image": spec.image or default_image,
        "command": _command(spec),
        "env": _env(job, spec, member, attempt),
        "ports": [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT},
                  {"name": "progress", "containerPort": PROGRESS_PORT}],
        "resources": {k: v for k, v in resources.items() if v},
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "storage", "mountPath": STORAGE_MOUNT, "subPath": sub_path}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": restricted_container_security(),
    }
    if spec.args is not None:
        container["args"] = spec.args
    pod_spec: Obj = {
        "hostname": name, "subdomain": service_name(job.name), "restartPolicy": "Never",
        "enableServiceLinks": False, "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": restricted_pod_security(),
        "containers": [container],
        "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}},
                    {"name": "tmp", "emptyDir": {}}, storage],
    }
    if spec.finetune is not None and member.role == ROLE_NODE:
        _attach_finetune_inputs(pod_spec, spec.finetune, container["image"])
    gpu = ({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},) \
        if spec.resources.gpus and member.role == ROLE_NODE else ()
    pod_spec.update(tmpl.pod_spec_fields(gpu))
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": job.namespace, "labels": labels,
                     "annotations": dict(tmpl.annotations), "ownerReferences": [owner_reference(job, KIND)]},
        "spec": pod_spec,
    }


def render_publish_pod(job: ObjectRef, spec: TrainingJobSpec, attempt: int, default_image: str, shm_size: str,
                       compressed: str | None) -> Obj:
    """The publish stage: the trainer image on the job's storage copies the artifact (and the published
    compressed one, `compressed` relative to the storage) to `spec.output`; only this container gets
    the Secret's credentials."""
    assert spec.output is not None
    pod = render_pod(job, spec, Member(ROLE_PUBLISH, 0, 0), attempt, default_image, shm_size)
    container = pod["spec"]["containers"][0]
    secret = spec.output.secret_ref.name
    container["command"] = [*PUBLISH_COMMAND, "--storage", STORAGE_MOUNT, "--uri", spec.output.uri,
                            "--secret-name", secret, *(["--compressed", compressed] if compressed else [])]
    container.pop("args", None)
    container.pop("ports", None)
    container["env"] = credential_env(secret)
    container["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    for key in ("hostname", "subdomain"):
        pod["spec"].pop(key, None)
    return pod


def render_compression_pod(job: ObjectRef, spec: TrainingJobSpec, attempt: int, default_image: str,
                           shm_size: str) -> Obj:
    """The compression stage: the trainer image on the job's storage, without the gang's torchrun
    wiring, with the resources of `spec.compression` (CPU by default: int8 kernels are CPU kernels).
    It always has a CPU request (one whole CPU unless the user asks for CPU) and times with as many
    threads as whole CPUs requested: what the scheduler guarantees, not whatever the node has free."""
    assert spec.compression is not None
    pod = render_pod(job, spec, Member(ROLE_COMPRESS, 0, 0), attempt, default_image, shm_size)
    container = pod["spec"]["containers"][0]
    container["command"] = COMPRESS_COMMAND
    container.pop("args", None)
    container.pop("ports", None)
    res = spec.compression.resources
    cpu = res.requests.get("cpu", res.limits.get("cpu", "1"))  # a limit alone is also the request
    requests = {**res.requests, "cpu": cpu}
    threads = {"name": CompressEnv.THREADS, "value": str(request_threads(cpu))}
    container["env"] = [e for e in container["env"] if not e["name"].startswith("PET_")] + [threads]
    container["resources"] = {k: v for k, v in {"limits": dict(res.limits), "requests": requests}.items() if v}
    data = spec.compression.eval_data
    if data is not None:
        path = attach(pod["spec"], "eval-data", data.uri, data.secret_ref.name if data.secret_ref else None,
                      data.format == "images", container["image"])
        container["env"].append({"name": CompressEnv.EVAL_DATA, "value": path})
    for key in ("hostname", "subdomain"):
        pod["spec"].pop(key, None)
    return pod
