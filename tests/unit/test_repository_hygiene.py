"""Nothing that grants access to a cluster is ever tracked: no kubeconfigs, tokens or keys."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CREDENTIAL_MARKERS = ("client-key-data:", "client-certificate-data:", "token: ey", "-----BEGIN PRIVATE KEY-----",
                      "-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----")


def tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / p for p in out.decode().split("\0") if p]


def test_no_kubeconfig_or_key_is_tracked() -> None:
    offenders = []
    for path in tracked():
        if path.suffix in (".kubeconfig", ".key", ".pem", ".crt") or path.name in ("kubeconfig", "token"):
            offenders.append(path)
        elif path.is_file() and path.stat().st_size < 1_000_000:
            text = path.read_text(errors="ignore")
            if any(marker in text for marker in CREDENTIAL_MARKERS) and path.suffix not in (".py", ".md"):
                offenders.append(path)
    assert not offenders, f"credential-like files are tracked: {offenders}"


def test_cluster_state_directories_are_ignored() -> None:
    for d in (".cluster", ".cluster-operator"):
        probe = REPO / d / "operator.kubeconfig"
        out = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO)
        assert out.returncode == 0, f"{d}/ is not ignored"
