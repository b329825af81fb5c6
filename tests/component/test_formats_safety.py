"""No code from a model directory ever runs when Kubeforge loads it. Each test plants a payload that
writes a marker file when executed (a pickle whose `__reduce__` touches the marker, or Python source
where torch would evaluate it) where a loader would meet it: `pytorch_model.bin` in a transformers
directory; a torch.export archive whose weights, constants or sample inputs are pickles, whose shape
expressions or argument names are code; a `model.pt2` that is a pickle. Loading fails with one line
(or, for the sample inputs Kubeforge never reads, succeeds) and the marker never appears. The same
payloads do run under an unguarded `torch.export.load` (checked in a separate process), so these
tests would notice a guard that stopped guarding."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hf_models import exported_mlp, tiny_bert_classifier
from kubeforge_api.server_settings import EXIT_MODEL_LOAD_FAILED, ServerEnv
from kubeforge_trainer.formats import FormatError, load
from servehelp import Server

Files = dict[str, bytes]


class Payload:
    """Unpickling it touches `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.marker,)


def torch_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def rewrite(archive: Path, change: Callable[[Files], None]) -> None:
    """Rewrite the archive's entries (relative to its one top-level folder) in place."""
    with zipfile.ZipFile(archive) as z:
        root = z.namelist()[0].split("/")[0] + "/"
        files = {name[len(root):]: z.read(name) for name in z.namelist()}
    change(files)
    with zipfile.ZipFile(archive, "w") as z:
        for name, content in files.items():
            z.writestr(root + name, content)


def pickled_weight(marker: Path) -> Callable[[Files], None]:
    def change(files: Files) -> None:
        config = json.loads(files["data/weights/model_weights_config.json"])
        entry = config["config"]["body.0.weight"]
        entry["use_pickle"] = True
        files["data/weights/model_weights_config.json"] = json.dumps(config).encode()
        files["data/weights/" + entry["path_name"]] = torch_pickle(Payload(marker))
    return change


def pickled_constant(marker: Path) -> Callable[[Files], None]:
    def change(files: Files) -> None:
        files["data/constants/model_constants_config.json"] = json.dumps({"config": {"evil": {
            "path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}}}).encode()
        files["data/constants/opaque_obj_0"] = pickle.dumps(Payload(marker))
    return change


def pickled_sample_inputs(marker: Path) -> Callable[[Files], None]:
    def change(files: Files) -> None:
        files["data/sample_inputs/model.pt"] = torch_pickle(Payload(marker))
    return change


def code_in_a_shape(marker: Path) -> Callable[[Files], None]:
    def change(files: Files) -> None:
        program = files["models/model.json"].decode()
        symbol = program.split('"expr_str": "', 1)[1].split('"', 1)[0]
        code = f"{symbol} + 0*len(__import__('pathlib').Path('{marker}').touch() or 'x')"
        files["models/model.json"] = program.replace(symbol, code, 1).encode()
    return change


def code_in_an_argument_name(marker: Path) -> Callable[[Files], None]:
    def change(files: Files) -> None:
        doc = json.loads(files["models/model.json"])
        signature = doc["graph_module"]["module_call_graph"][0]["signature"]
        signature["forward_arg_names"] = ["features", f"mask=__import__('pathlib').Path('{marker}').touch()"]
        files["models/model.json"] = json.dumps(doc).encode()
    return change


def compiled_code(marker: Path) -> Callable[[Files], None]:
    def change(files: Files) -> None:
        files["data/aotinductor/model/model.so"] = b"\x7fELF" + str(marker).encode()
    return change


REFUSED = {pickled_weight: "pickled", pickled_constant: "pickled", code_in_a_shape: "shape expression",
           code_in_an_argument_name: "identifiers", compiled_code: "AOTInductor"}


@pytest.fixture
def program(tmp_path: Path) -> Path:
    return exported_mlp(tmp_path / "program")


@pytest.mark.parametrize("attack", list(REFUSED), ids=lambda f: f.__name__)
def test_a_crafted_program_is_refused_without_running_it(program: Path, tmp_path: Path,
                                                          attack: Callable[[Path], Callable[[Files], None]]) -> None:
    marker = tmp_path / "marker"
    rewrite(program / "model.pt2", attack(marker))
    with pytest.raises(FormatError, match=REFUSED[attack]) as refused:
        load(program)
    assert "\n" not in str(refused.value) and str(program) in str(refused.value)
    assert not marker.exists()


def test_pickled_sample_inputs_are_never_read(program: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    rewrite(program / "model.pt2", pickled_sample_inputs(marker))
    loaded = load(program)
    assert [t.name for t in loaded.inputs] == ["features", "mask"] and not marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_a_program_that_is_a_pickle_is_refused(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "marker"
    directory = tmp_path / "model"
    directory.mkdir()
    payload = pickle.dumps(Payload(marker)) if kind == "pickle" else torch_pickle(Payload(marker))
    (directory / "model.pt2").write_bytes(payload)
    with pytest.raises(FormatError, match=r"pickled models.* never loaded") as refused:
        load(directory)
    assert "\n" not in str(refused.value) and not marker.exists()


def test_a_transformers_directory_with_pickled_weights_only_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    directory = tiny_bert_classifier(tmp_path / "bert")
    (directory / "model.safetensors").unlink()
    (directory / "pytorch_model.bin").write_bytes(torch_pickle(Payload(marker)))
    with pytest.raises(FormatError, match=r"no \*\.safetensors weights \(found pytorch_model\.bin") as refused:
        load(directory)
    assert "\n" not in str(refused.value) and not marker.exists()


def test_pickles_beside_safetensors_weights_are_never_read(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    directory = tiny_bert_classifier(tmp_path / "bert")
    for name in ("pytorch_model.bin", "training_args.bin", "optimizer.pt"):
        (directory / name).write_bytes(torch_pickle(Payload(marker)))
    assert load(directory).architecture == "BertForSequenceClassification"
    assert not marker.exists()


UNGUARDED = """
import sys, torch
try:
    torch.export.load(sys.argv[1]).module()
except Exception:
    pass
"""


@pytest.mark.parametrize("attack", [pickled_weight, pickled_sample_inputs, code_in_a_shape], ids=lambda f: f.__name__)
def test_the_payloads_run_under_an_unguarded_load(program: Path, tmp_path: Path,
                                                  attack: Callable[[Path], Callable[[Files], None]]) -> None:
    """What the guard is for: torch.export.load itself runs each of these (in a process of its own)."""
    marker = tmp_path / "marker"
    rewrite(program / "model.pt2", attack(marker))
    subprocess.run([sys.executable, "-c", UNGUARDED, str(program / "model.pt2")], capture_output=True, timeout=300)
    assert marker.exists()


def test_the_server_refuses_a_pickle_in_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "model.pt2").write_bytes(pickle.dumps(Payload(marker)))
    log = tmp_path / "termination-log"
    s = Server(directory, env={ServerEnv.TERMINATION_LOG: str(log)}).start(wait_ready=False)
    assert s.proc is not None and s.proc.wait(timeout=120) == EXIT_MODEL_LOAD_FAILED
    why = log.read_text()
    assert "not a torch.export archive" in why and "\n" not in why.strip() and "Traceback" not in s.stderr()
    assert not marker.exists()
