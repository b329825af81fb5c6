"""`make operator-up` / `make operator-down`: the operator as a local process, installed and removed
as one thing. Up refuses (one line) where another Kubeforge operator already acts on the cluster (a
Helm release, or any replica renewing the operator Lease), records what it applied, and down removes
exactly that (the CRDs stay: deleting them would delete every job), so a Helm install can follow."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from .operator_process import OperatorProcess, install, kubectl, operator_kubeconfig

LEASE = "kubeforge-operator"
HELM_RELEASE = "meta.helm.sh/release-name"
HELM_NAMESPACE = "meta.helm.sh/release-namespace"
INSTALLED = "installed.yaml"  # what operator-up applied, deleted by operator-down
ADMIN = "admin-kubeconfig"  # the kubeconfig operator-up used, for operator-down


def _items(admin: Path, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(kubectl(admin, "get", *args, "-o", "json"))["items"])


def helm_release(admin: Path) -> str | None:
    """The Helm release that installed Kubeforge here, if one did."""
    for role in _items(admin, "clusterroles", "-l", "app.kubernetes.io/part-of=kubeforge"):
        notes = role["metadata"].get("annotations") or {}
        if HELM_RELEASE in notes:
            return f"release {notes[HELM_RELEASE]} in namespace {notes.get(HELM_NAMESPACE, '?')}"
    return None


def lease_holder(admin: Path, now: datetime) -> str | None:
    """Who renews the operator Lease, if anyone did within twice its duration."""
    for lease in _items(admin, "leases", "-A", f"--field-selector=metadata.name={LEASE}"):
        spec = lease.get("spec") or {}
        renewed = spec.get("renewTime")
        if not renewed or not spec.get("holderIdentity"):
            continue
        age = (now - datetime.fromisoformat(renewed.replace("Z", "+00:00"))).total_seconds()
        if age < 2 * int(spec.get("leaseDurationSeconds") or 15):
            return f"{spec['holderIdentity']} (Lease {lease['metadata']['namespace']}/{LEASE}, renewed {age:.0f} s ago)"
    return None


def another_operator(admin: Path) -> str | None:
    """Why operator-up must not start a second operator, in one line; None when nothing else acts."""
    release = helm_release(admin)
    if release:
        return (f"Kubeforge is installed here by Helm ({release}): use that operator, or `helm uninstall` "
                "it before make operator-up")
    holder = lease_holder(admin, datetime.now(UTC))
    if holder:
        return f"another Kubeforge operator is running here: {holder}; stop it before make operator-up"
    return None


def operator_up(admin: Path, root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    stop(root)
    refusal = another_operator(admin)
    if refusal:
        print(f"operator-up: {refusal}", file=sys.stderr)
        return 1
    applied = install(admin)
    (root / INSTALLED).write_text(yaml.safe_dump_all([d for d in applied if d["kind"] != "CustomResourceDefinition"]))
    (root / ADMIN).write_text(str(admin))
    op = OperatorProcess(operator_kubeconfig(admin, root / "operator.kubeconfig"), root / "operator.log").start()
    assert op.proc is not None
    (root / "operator.pid").write_text(str(op.proc.pid))
    print(f"operator running (pid {op.proc.pid}); log: {root / 'operator.log'}")
    return 0


def stop(root: Path) -> None:
    """Stop the operator process operator-up started, if it runs."""
    pid_file = root / "operator.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink()


def operator_down(root: Path) -> int:
    """Stop the operator and delete what operator-up applied (the CRDs and the jobs stay)."""
    stop(root)
    installed, admin = root / INSTALLED, root / ADMIN
    if installed.exists() and admin.exists():
        count = sum(1 for d in yaml.safe_load_all(installed.read_text()) if d)
        kubectl(Path(admin.read_text()), "delete", "--ignore-not-found", "--wait=true", "--timeout=120s", "-f",
                str(installed))
        print(f"operator-down: removed the {count} objects operator-up installed (the CRDs and the jobs stay)")
        installed.unlink()
    return 0
