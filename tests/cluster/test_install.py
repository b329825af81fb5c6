"""The shipped RBAC, as the API server itself evaluates it for the operator's ServiceAccount."""

from __future__ import annotations

import pytest
from conftest import Cluster
from minicluster.operator_process import NAMESPACE, SERVICE_ACCOUNT, install

AS = f"--as=system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"


@pytest.mark.parametrize(("verb", "resource", "allowed"), [
    ("create", "pods", True), ("delete", "pods", True), ("watch", "trainingjobs.kubeforge.dev", True),
    ("patch", "trainingjobs.kubeforge.dev/status", True), ("create", "services", True),
    ("create", "events", True),
    ("get", "secrets", False), ("list", "secrets", False), ("create", "pods/exec", False),
    ("update", "trainingjobs.kubeforge.dev", False), ("create", "deployments.apps", True),
    ("patch", "servingjobs.kubeforge.dev/status", True), ("create", "horizontalpodautoscalers.autoscaling", True),
    ("delete", "services", False), ("create", "statefulsets.apps", False), ("create", "events.events.k8s.io", False),
    ("create", "rolebindings.rbac.authorization.k8s.io", False), ("impersonate", "users", False),
    ("create", "serviceaccounts/token", False), ("delete", "nodes", False),
    ("update", "leases.coordination.k8s.io", False),  # only its own Lease, in its own namespace
])
def test_operator_service_account_can_do_exactly_what_it_needs(cluster: Cluster, verb: str, resource: str,
                                                               allowed: bool) -> None:
    install(cluster.kubeconfig)
    resource, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    out = cluster.kubectl("auth", "can-i", verb, resource, *extra, AS, "-n", "default", check=False)
    assert out.stdout.strip() == ("yes" if allowed else "no"), (verb, resource, out.stdout, out.stderr)


def test_operator_may_hold_only_its_own_lease_in_its_own_namespace(cluster: Cluster) -> None:
    install(cluster.kubeconfig)

    def can(verb: str, lease: str) -> bool:
        out = cluster.kubectl("auth", "can-i", verb, f"leases.coordination.k8s.io/{lease}", AS, "-n", NAMESPACE,
                              check=False)
        return out.stdout.strip() == "yes"

    assert can("get", SERVICE_ACCOUNT) and can("update", SERVICE_ACCOUNT)
    assert not can("update", "someone-else") and not can("delete", SERVICE_ACCOUNT)
