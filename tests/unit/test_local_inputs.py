"""A local run finds what a pod mounts on this machine: claims under --claims, emptyDirs in the run
folder, the job's storage left to the caller; paths in env and arguments follow."""

from __future__ import annotations

import sys
from pathlib import Path

from kubeforge_api.trainingjob import TrainingJobSpec
from kubeforge_operator.localinputs import container_env, local_mounts, localize, run_init_containers
from kubeforge_operator.plan import ObjectRef
from kubeforge_operator.render.trainingjob import members, render_pod

SPEC = {"finetune": {"model": {"uri": "s3://models/base/", "secretRef": {"name": "s3"}},
                     "data": {"uri": "pvc://data/chat/train.jsonl"}}}


def pod() -> dict[str, object]:
    spec = TrainingJobSpec.model_validate(SPEC)
    return render_pod(ObjectRef("j", "ns", "u", 1), spec, members(spec)[0], 0, "img", "1Gi")


def test_claims_and_copies_are_local_folders_and_paths_follow(tmp_path: Path) -> None:
    mounts = local_mounts(pod(), tmp_path / "claims", tmp_path / "run")
    assert mounts == {"/kubeforge/inputs/base-model": tmp_path / "run" / "base-model",
                      "/kubeforge/inputs/train-data": tmp_path / "claims" / "data",
                      "/tmp": tmp_path / "run" / "tmp"}
    env = container_env(pod()["spec"]["containers"][0], mounts)  # type: ignore[index]
    assert env["KUBEFORGE_FINETUNE_DATA"] == str(tmp_path / "claims" / "data" / "chat" / "train.jsonl")
    assert env["KUBEFORGE_FINETUNE_MODEL_DIR"] == str(tmp_path / "run" / "base-model")
    assert localize("/kubeforge/inputs/base-modelx", mounts) == "/kubeforge/inputs/base-modelx"


def test_init_containers_run_in_order_and_the_first_failure_stops_them(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    p = {"spec": {"volumes": [], "containers": [{}], "initContainers": [
        {"command": [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('1')"]},
        {"command": [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write('no such object'); exit(66)",
                     str(tmp_path / "term")]},
        {"command": [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('3')"]}]}}
    code = run_init_containers(p, {}, {}, tmp_path / "log", tmp_path / "term")
    assert code == 66 and marker.read_text() == "1" and (tmp_path / "term").read_text() == "no such object"
