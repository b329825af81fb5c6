"""The README is the truth: its job YAML is what the API accepts, its Python names what exists, and
the files and make targets it points to are there."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from kubeforge_api.trainingjob import TrainingJob
from kubeforge_trainer.report import Report

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_the_job_yaml_is_accepted_by_the_models() -> None:
    [job] = blocks("yaml")
    assert TrainingJob.model_validate(yaml.safe_load(job)).spec.command


def test_the_reporting_example_calls_what_report_offers() -> None:
    [example] = blocks("python")
    for method in re.findall(r"report\.(\w+)\(", example):
        assert callable(getattr(Report, method, None)), method


def test_linked_files_samples_and_make_targets_exist() -> None:
    linked = re.findall(r"\]\(((?:docs|manifests)/[^)#]+)", README)
    for path in linked + re.findall(r"manifests/samples/[\w.-]+", README):
        assert (REPO / path).exists(), path
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    for target in set(re.findall(r"make ([a-z][\w-]+)", README)):
        assert target in targets, target
