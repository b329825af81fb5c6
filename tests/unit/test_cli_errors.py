"""`kubeforge run` answers input mistakes with one line per problem naming the file and the field:
no traceback, no library boilerplate, the same verdict the API server gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubeforge_cli.main import main

GOOD = """apiVersion: kubeforge.dev/v1alpha1
kind: TrainingJob
metadata: {name: demo}
spec:
  recipe: {model: mlp, dataset: digits}
"""


@pytest.mark.parametrize(("content", "expected"), [
    (None, "{file}: no such file or directory"),
    ("a: [\n", "{file}:2: not valid YAML: expected the node content, but found '<stream end>'"),
    ("kind: Deployment\nmetadata: {name: web}\n",
     "{file}: expected exactly one TrainingJob, found 0 (the file holds: Deployment)"),
    (GOOD + "---\n" + GOOD, "{file}: expected exactly one TrainingJob, found 2 (the file holds: TrainingJob, "
                            "TrainingJob)"),
    ("kind: TrainingJob\nspec: {}\n", "{file}: the TrainingJob has no metadata.name"),
    (GOOD.replace("dataset: digits", "dataset: digits, epoch: 3"),
     "{file}: spec.recipe.epoch: unknown field (did you mean epochs?)"),
    (GOOD.replace("name: demo", "name: " + "x" * 58),
     "{file}: metadata.name: metadata.name must be at most 45 characters (pod host names derive from it)"),
    (GOOD.replace("dataset: digits", "dataset: file"),
     "{file}: spec.recipe.datasetPath: recipe.datasetPath is required with dataset 'file'"),
])
def test_input_errors_are_one_line_naming_file_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         content: str | None, expected: str) -> None:
    path = tmp_path / "job.yaml"
    if content is not None:
        path.write_text(content)
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "kubeforge: " + expected.format(file=path)
    assert "Traceback" not in err and "pydantic" not in err


def test_a_directory_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"kubeforge: {tmp_path}: is a directory"


def test_what_kubeforge_run_does_not_run_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    serving = "kind: ServingJob\nmetadata: {name: web}\nspec: {model: {uri: pvc://m/a}}\n"
    path.write_text(GOOD.replace("dataset: digits", "dataset: digits, epoch: 3") + "---\n" + serving)
    assert main(["run", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"kubeforge: {path}: ignoring ServingJob web: `kubeforge run` runs a TrainingJob only",
        f"kubeforge: {path}: spec.recipe.epoch: unknown field (did you mean epochs?)"]
