"""Pure pieces of every pod that talks to an object store: the credentials of a `secretRef` as
environment (each key from the Secret, the endpoint and region optional), given only to the
container that copies, never to the user's code or the inference server."""

from __future__ import annotations

from typing import Any

from kubeforge_api.storage import CREDENTIAL_KEYS, REQUIRED_CREDENTIAL_KEYS

Obj = dict[str, Any]


def credential_env(secret: str) -> list[Obj]:
    """AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (required), AWS_ENDPOINT_URL, AWS_REGION (optional) from `secret`."""
    return [{"name": key, "valueFrom": {"secretKeyRef": {
        "name": secret, "key": key, **({} if key in REQUIRED_CREDENTIAL_KEYS else {"optional": True})}}}
        for key in CREDENTIAL_KEYS]
