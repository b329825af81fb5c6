"""Pure pieces of every pod that talks to an object store: the credentials of a `secretRef` as
environment (each key from the Secret, the endpoint and region optional), given only to the
container that copies, never to the user's code or the inference server."""

from __future__ import annotations

from typing import Any

from kubeforge_api.storage import (
    CREDENTIAL_KEYS,
    REQUIRED_CREDENTIAL_KEYS,
    STORAGE_COMMAND,
    STORAGE_INITIALIZER_NAME,
    is_s3,
    split_pvc,
    split_s3,
)

from .common import restricted_container_security

Obj = dict[str, Any]
INITIALIZER_REQUESTS = {"cpu": "100m", "memory": "256Mi"}  # a copy is I/O-bound
INPUTS_ROOT = "/kubeforge/inputs"  # where a pod finds the models and data sets its job names


def credential_env(secret: str) -> list[Obj]:
    """AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (required), AWS_ENDPOINT_URL, AWS_REGION (optional) from `secret`."""
    return [{"name": key, "valueFrom": {"secretKeyRef": {
        "name": secret, "key": key, **({} if key in REQUIRED_CREDENTIAL_KEYS else {"optional": True})}}}
        for key in CREDENTIAL_KEYS]


def fetch_container(uri: str, secret: str, volume: str, mount: str, image: str, *extra: str) -> Obj:
    """An init container that copies `uri` into the volume `volume` mounted at `mount` (see
    `python -m kubeforge_trainer.storage fetch`); `extra` are more arguments (a digest, a size bound)."""
    return {
        "name": STORAGE_INITIALIZER_NAME, "image": image, "command": list(STORAGE_COMMAND),
        "args": ["fetch", "--uri", uri, "--dest", mount, "--secret-name", secret, "--clean", *extra],
        "env": credential_env(secret), "resources": {"requests": dict(INITIALIZER_REQUESTS)},
        "volumeMounts": [{"name": volume, "mountPath": mount}, {"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError", "securityContext": restricted_container_security(),
    }


def attach(pod_spec: Obj, volume: str, uri: str, secret: str | None, is_directory: bool, image: str) -> str:
    """Make the file or directory at `uri` readable in the pod's first container under
    `/kubeforge/inputs/VOLUME` (a claim mounted read-only, or an s3:// copy an init container makes
    into an emptyDir); returns its path in the pod."""
    mount = f"{INPUTS_ROOT}/{volume}"
    pod_spec["containers"][0]["volumeMounts"].append({"name": volume, "mountPath": mount, "readOnly": True})
    if is_s3(uri):
        assert secret is not None, "an s3:// uri comes with its Secret"
        pod_spec["volumes"].append({"name": volume, "emptyDir": {}})
        init = fetch_container(uri, secret, volume, mount, image)
        init["name"] = f"fetch-{volume}"
        pod_spec.setdefault("initContainers", []).append(init)
        key = split_s3(uri)[1]
        return mount if is_directory else f"{mount}/{key.rsplit('/', 1)[-1]}"
    claim, path = split_pvc(uri)
    pod_spec["volumes"].append({"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    return f"{mount}/{path}"
