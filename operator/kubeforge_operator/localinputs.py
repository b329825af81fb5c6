"""A local run's volumes: what a rendered pod mounts, found on this machine. A claim is the
directory `CLAIMS/CLAIM` (`kubeforge run --claims`), an emptyDir a fresh folder in the run; every
path the pod's containers are given (env values, arguments) under a mount is rewritten to the local
folder. Init containers (the copies of `s3://` models and data) run first, in order, with this
machine's `AWS_*` environment in place of the Secret (which only a cluster has)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from kubeforge_api.constants import Env as E

Obj = dict[str, Any]
JOB_STORAGE = "storage"  # the job's own storage volume: the run's storage folder, mapped by the caller


def local_mounts(pod: Obj, claims: Path, scratch: Path) -> dict[str, Path]:
    """mountPath -> local folder for every claim and emptyDir a container of `pod` mounts."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    mounts: dict[str, Path] = {}
    for c in [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]:
        for m in c.get("volumeMounts") or []:
            volume = volumes.get(m["name"]) or {}
            if m["name"] == JOB_STORAGE:
                continue
            if "persistentVolumeClaim" in volume:
                mounts[m["mountPath"]] = claims / volume["persistentVolumeClaim"]["claimName"]
            elif "emptyDir" in volume and volume.get("emptyDir", {}).get("medium") != "Memory":
                mounts[m["mountPath"]] = scratch / m["name"]
    return mounts


def localize(text: str, mounts: dict[str, Path]) -> str:
    """`text` with a leading mount path replaced by its local folder (the longest mount first)."""
    for mount in sorted(mounts, key=len, reverse=True):
        if text == mount or text.startswith(mount + "/"):
            return str(mounts[mount]) + text[len(mount):]
    return text


def container_env(container: Obj, mounts: dict[str, Path]) -> dict[str, str]:
    """The literal env values of a container, localized (values from Secrets are a cluster's only)."""
    return {e["name"]: localize(e["value"], mounts) for e in container.get("env") or [] if "value" in e}


def run_init_containers(pod: Obj, mounts: dict[str, Path], base_env: dict[str, str], log: Path,
                        termination: Path) -> int:
    """Each init container to completion, in order; the exit code of the first that fails, else 0."""
    for folder in mounts.values():
        folder.mkdir(parents=True, exist_ok=True)
    for c in pod["spec"].get("initContainers") or []:
        argv = [localize(a, mounts) for a in [*c["command"], *c.get("args", [])]]
        env = {**base_env, **container_env(c, mounts), E.TERMINATION_LOG: str(termination)}
        with log.open("ab") as out:
            code = subprocess.run(argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT).returncode
        if code != 0:
            return code
    return 0
