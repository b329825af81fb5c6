"""Named constants of the contract: API group, labels, annotations, the env vars the operator
gives pods, condition types and reasons. Everything that crosses a process boundary is named here."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

GROUP: Final = "kubeforge.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
TRAININGJOB_PLURAL: Final = "trainingjobs"
SERVINGJOB_PLURAL: Final = "servingjobs"

# Labels on every child; selectors and the operator's pod cache key on them.
LABEL_JOB: Final = "kubeforge.dev/job-name"
LABEL_ROLE: Final = "kubeforge.dev/role"
LABEL_RANK: Final = "kubeforge.dev/rank"
LABEL_ATTEMPT: Final = "kubeforge.dev/attempt"
LABEL_SERVING: Final = "kubeforge.dev/serving-name"
LABEL_TRACK: Final = "kubeforge.dev/track"  # main | canary
LABEL_OWNER_UID: Final = "kubeforge.dev/owner-uid"  # on grandchildren (a Deployment's pods)
ANNOTATION_SPEC_HASH: Final = "kubeforge.dev/spec-hash"  # of the rendered child: an update only when it changes
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "kubeforge-operator"
# Kueue's job labels: the LocalQueue a job waits in, and the WorkloadPriorityClass that orders it.
LABEL_KUEUE_QUEUE: Final = "kueue.x-k8s.io/queue-name"
LABEL_KUEUE_PRIORITY: Final = "kueue.x-k8s.io/priority-class"

ROLE_NODE: Final = "node"
ROLE_PS: Final = "ps"
ROLE_COMPRESS: Final = "compress"  # the compression stage's pod
ROLE_PUBLISH: Final = "publish"  # the pod that copies the artifacts to spec.output
STAGE_ROLES: Final = frozenset({ROLE_COMPRESS, ROLE_PUBLISH})  # pods after training, outside the gang
RENDEZVOUS_PORT: Final = 29500
PROGRESS_PORT: Final = 29400
CONTAINER_NAME: Final = "trainer"
STORAGE_MOUNT: Final = "/kubeforge/storage"


class Env(StrEnum):
    """Environment the operator sets in every training pod (torchrun reads PET_*)."""

    NNODES = "PET_NNODES"
    NPROC_PER_NODE = "PET_NPROC_PER_NODE"
    NODE_RANK = "PET_NODE_RANK"
    MASTER_ADDR = "PET_MASTER_ADDR"
    MASTER_PORT = "PET_MASTER_PORT"
    RDZV_BACKEND = "PET_RDZV_BACKEND"
    RDZV_ENDPOINT = "PET_RDZV_ENDPOINT"
    RDZV_ID = "PET_RDZV_ID"
    MAX_RESTARTS = "PET_MAX_RESTARTS"
    RDZV_CONF = "PET_RDZV_CONF"  # elastic: c10d's timeouts and which agent hosts the store
    LOCAL_ADDR = "PET_LOCAL_ADDR"  # elastic: the pod's DNS name, which orders agents (node rank 0 first)
    JOB_NAME = "KUBEFORGE_JOB_NAME"
    JOB_NAMESPACE = "KUBEFORGE_JOB_NAMESPACE"
    JOB_UID = "KUBEFORGE_JOB_UID"
    JOB_GENERATION = "KUBEFORGE_JOB_GENERATION"
    ROLE = "KUBEFORGE_ROLE"
    ROLE_RANK = "KUBEFORGE_ROLE_RANK"
    ATTEMPT = "KUBEFORGE_ATTEMPT"
    STRATEGY = "KUBEFORGE_STRATEGY"
    NUM_NODES = "KUBEFORGE_NUM_NODES"
    NUM_PARAMETER_SERVERS = "KUBEFORGE_NUM_PARAMETER_SERVERS"
    PS_ADDRESSES = "KUBEFORGE_PS_ADDRESSES"
    SPEC = "KUBEFORGE_SPEC"
    STORAGE_DIR = "KUBEFORGE_STORAGE_DIR"
    PROGRESS_PORT = "KUBEFORGE_PROGRESS_PORT"
    DIST_BACKEND = "KUBEFORGE_DIST_BACKEND"
    TERMINATION_LOG = "KUBEFORGE_TERMINATION_LOG"  # set only outside a pod (local runs); default below
    CPU_LIMIT_MILLICORES = "KUBEFORGE_CPU_LIMIT_MILLICORES"  # downward API limits.cpu, divisor 1m
    OUTPUT_DIR = "KUBEFORGE_OUTPUT_DIR"  # command jobs, rank 0: where the user's script saves its model


TERMINATION_LOG_PATH: Final = "/dev/termination-log"


# Names a user may not set in spec.env (the CRD rejects them too).
RESERVED_ENV_NAMES: Final = frozenset(
    {"MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
     "NODE_RANK", "NNODES", "NPROC_PER_NODE"})
RESERVED_ENV_PREFIXES: Final = ("PET_", "TORCHELASTIC_", "KUBEFORGE_")


class ConditionType(StrEnum):
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    COMPRESSED = "Compressed"
    PUBLISHED = "Published"
    QUEUED = "Queued"  # waiting for Kueue to admit the job's Workload


class State(StrEnum):
    """The one-word `status.state` shown by `kubectl get tj`."""

    PENDING = "Pending"
    CREATED = "Created"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    COMPRESSING = "Compressing"
    PUBLISHING = "Publishing"
    SUSPENDED = "Suspended"
    QUEUED = "Queued"  # waiting for Kueue to admit it
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    INTERRUPTED = "Interrupted"  # local runs only: stopped by Ctrl-C or SIGTERM


class Reason(StrEnum):
    """CamelCase reasons on conditions and events."""

    PODS_CREATED = "PodsCreated"
    CONTAINER_CREATING = "ContainerCreating"
    ALL_RUNNING = "AllPodsRunning"
    UNSCHEDULABLE = "Unschedulable"
    IMAGE_PULL_BACKOFF = "ImagePullBackOff"
    CRASH_LOOP_BACKOFF = "CrashLoopBackOff"
    CONFIG_ERROR = "CreateContainerConfigError"
    OOM_KILLED = "OOMKilled"
    EXIT_CODE = "ExitCode"
    DISRUPTED = "Disrupted"
    NODE_LOST = "NodeLost"
    RESIZED = "Resized"  # an elastic job trains on fewer workers than spec.nodes (no gang restart)
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    STARTUP_DEADLINE_EXCEEDED = "StartupDeadlineExceeded"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    INVALID_SPEC = "InvalidSpec"
    GANG_RESTART = "GangRestart"
    RESTARTED = "Restarted"
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    COMPLETED = "Completed"
    COMPRESSING = "Compressing"
    PUBLISHING = "Publishing"
    PUBLISHED = "Published"
    PUBLISH_FAILED = "PublishFailed"
    POD_DELETED = "PodDeleted"
    CREATE_REJECTED = "CreateRejected"  # the API server refused a child (Pod Security, quota, PriorityClass...)
    NAME_CONFLICT = "NameConflict"  # a child's name is taken by an object this job does not own
    PROGRESS_ENDPOINT_MISBEHAVING = "ProgressEndpointMisbehaving"  # Warning Event only: rank 0's endpoint
    POD_POLICY_VIOLATION = "PodPolicyViolation"  # spec.podTemplate asks for what the operator's settings forbid
    ADMITTED = "Admitted"  # Kueue admitted the job's Workload
    EVICTED = "Evicted"  # Kueue evicted the Workload (preemption, quota reclaim...): a disruption
    KUEUE_NOT_INSTALLED = "KueueNotInstalled"  # the job names a queue but Kueue's Workload API is not served
    PRIORITY_CLASS_NOT_FOUND = "WorkloadPriorityClassNotFound"
    RECONCILE_ERROR = "ReconcileError"  # on the kind-neutral Reconciled condition: the operator's pass crashes


# A condition of every kind, present only while the operator's passes over the object crash.
CONDITION_RECONCILED: Final = "Reconciled"
