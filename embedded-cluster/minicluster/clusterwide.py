"""What an embedded cluster runs once, however many nodes it has: cluster DNS on the pod bridge's
gateway (answered from every node's pods and the Services), and the default StorageClass
`standard` with its host-directory provisioner (adopting volumes a previous cluster kept: `make
cluster-down KEEP_VOLUMES=1`). A node's death leaves them running, as a real cluster's DNS and
storage outlive one node. Acts with admin rights."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from .dns import DnsServer, resolve
from .kubeapi import ApiError, Informer, KubeClient, NotFound

Obj = dict[str, Any]
log = logging.getLogger(__name__)
STORAGE_CLASS = "standard"
PROVISIONER = "kubeforge.dev/host-directory"


class ClusterWide:
    def __init__(self, admin: KubeClient, gateway: str, volumes_root: Path) -> None:
        self.admin = admin
        self.gateway = gateway
        self.volumes_root = volumes_root
        self.pod_informer = Informer(admin, "/api/v1/pods", lambda _t, _o: None)
        self.svc_informer = Informer(admin, "/api/v1/services", lambda _t, _o: None)
        self.pvc_informer = Informer(admin, "/api/v1/persistentvolumeclaims", self._on_pvc)
        self.pv_informer = Informer(admin, "/api/v1/persistentvolumes", self._on_pv)
        self.kept: dict[tuple[str, str], str] = {}  # (namespace, claim) -> a kept volume reserved for it
        self.dns: DnsServer | None = None

    def start(self) -> None:
        self.volumes_root.mkdir(parents=True, exist_ok=True)
        self.dns = DnsServer(self.gateway, self.lookup)
        self.dns.start()
        self._ensure_storage_class()
        self._adopt_kept_volumes()
        for inf in (self.svc_informer, self.pvc_informer, self.pv_informer, self.pod_informer):
            inf.start()
        for inf in (self.svc_informer, self.pod_informer):
            inf.synced.wait(30)

    def stop(self) -> None:
        for inf in (self.pod_informer, self.svc_informer, self.pvc_informer, self.pv_informer):
            inf.stop()
        if self.dns:
            self.dns.close()

    def lookup(self, name: str) -> list[str] | None:
        return resolve(name, list(self.pod_informer.items.values()), list(self.svc_informer.items.values()))

    # ----- storage -----
    def _ensure_storage_class(self) -> None:
        body = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": STORAGE_CLASS,
                             "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}
        try:
            self.admin.create("/apis/storage.k8s.io/v1/storageclasses", body)
        except ApiError as e:
            if e.status != 409:
                raise

    def _adopt_kept_volumes(self) -> None:
        """Volumes a previous cluster left here (`make cluster-down KEEP_VOLUMES=1`) come back as
        PersistentVolumes reserved for their claim's namespace and name: applying the same claim
        again binds it to the old data instead of a new, empty volume."""
        for marker in sorted(self.volumes_root.glob("pvc-*.claim")):
            ns, _, name = marker.read_text().strip().partition("/")
            pv_name = marker.name.removesuffix(".claim")
            if not (self.volumes_root / pv_name).is_dir() or not name:
                continue
            self.kept[(ns, name)] = pv_name
            body = {"apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                    "spec": {"capacity": {"storage": "1Ti"},  # hostPath: any request fits
                             "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                             "persistentVolumeReclaimPolicy": "Delete", "storageClassName": STORAGE_CLASS,
                             "hostPath": {"path": str(self.volumes_root / pv_name), "type": "Directory"},
                             "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                          "namespace": ns, "name": name}}}
            try:
                self.admin.create("/api/v1/persistentvolumes", body)
                log.info("kept volume %s is waiting for claim %s/%s", pv_name, ns, name)
            except ApiError as e:
                if e.status != 409:
                    log.warning("could not restore kept volume %s: %s", pv_name, e)

    def _on_pvc(self, etype: str, pvc: Obj) -> None:
        spec, meta = pvc.get("spec", {}), pvc["metadata"]
        if etype == "DELETED" or spec.get("volumeName") or spec.get("storageClassName") != STORAGE_CLASS:
            return
        if (meta["namespace"], meta["name"]) in self.kept:  # the kept volume binds to it
            return
        pv_name = f"pvc-{meta['uid']}"
        path = self.volumes_root / pv_name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        # Beside the volume, whose claim it is: `make cluster-down` names what it deletes or keeps.
        (self.volumes_root / f"{pv_name}.claim").write_text(f"{meta['namespace']}/{meta['name']}\n")
        body = {"apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                "spec": {"capacity": {"storage": spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")},
                         "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Delete", "storageClassName": STORAGE_CLASS,
                         "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                         "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                      "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}}}
        try:
            self.admin.create("/api/v1/persistentvolumes", body)
        except ApiError as e:
            if e.status != 409:
                log.warning("provisioning %s failed: %s", pv_name, e)

    def _on_pv(self, etype: str, pv: Obj) -> None:
        annotations = pv["metadata"].get("annotations") or {}
        if etype == "DELETED" or annotations.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
            return
        if pv.get("status", {}).get("phase") == "Released":
            shutil.rmtree(self.volumes_root / pv["metadata"]["name"], ignore_errors=True)
            (self.volumes_root / f"{pv['metadata']['name']}.claim").unlink(missing_ok=True)
            self.kept = {k: v for k, v in self.kept.items() if v != pv["metadata"]["name"]}
            with contextlib.suppress(NotFound):
                self.admin.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")

