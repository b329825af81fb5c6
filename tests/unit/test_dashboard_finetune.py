"""The training page's view of a fine-tune: method and base model in the spec summary, the evaluation
before and after, and the adapter beside the merged artifact."""

from __future__ import annotations

from dashboard_world import finetune_job
from dashboard_world import finished_finetune as finished_status
from kubeforge_dashboard.views import training


def test_spec_summary_names_the_method_base_model_and_data() -> None:
    summary = dict(training.spec_summary(finetune_job()))
    assert summary["Fine-tune"] == "LoRA rank 8, alpha 16, dropout 0.05 on q_proj, v_proj"
    assert summary["Base model"] == "pvc://models/base/tiny-llama"
    assert summary["Data"] == "pvc://data/chat.jsonl (messages), 5% held back for eval"
    assert summary["Training"] == "1 epoch, batch 8, lr 0.0002, sequences of 512 tokens, packed"
    assert "Command" not in summary and "Recipe" not in summary
    full = dict(training.spec_summary(finetune_job(method="full", lora=None, evalData={"uri": "pvc://data/e.jsonl"})))
    assert full["Fine-tune"] == "full fine-tune" and full["Data"].endswith(", eval pvc://data/e.jsonl")


def test_evaluation_before_and_after_and_the_adapter_beside_the_merged_model() -> None:
    job = finetune_job(finished_status())
    assert training.evaluation_rows(job.status) == [
        ("loss", "2", "1.5", "-25.0%"), ("perplexity", "7.389", "4.482", "-39.3%"),
        ("trainable parameters", "", "1.23%", ""), ("training tokens/s", "", "1,234", "")]
    rows = dict(training.artifact_rows(job, []))
    assert rows["URI"] == "pvc://models/runs/chat-lora/artifact" and rows["Digest"] == "sha256:" + "cd" * 32
    assert rows["Adapter URI"] == "pvc://models/runs/chat-lora/adapter" and rows["Adapter size"] == "40.0 KiB"
    assert rows["Adapter digest"] == "sha256:" + "ef" * 32


def test_partial_or_missing_evaluation() -> None:
    assert training.evaluation_rows(finetune_job().status) == []
    before_only = finetune_job({"evaluation": {"before": {"loss": 2.0, "perplexity": 7.389}}})
    assert training.evaluation_rows(before_only.status) == [("loss", "2", "", ""), ("perplexity", "7.389", "", "")]
    zero = finetune_job({"evaluation": {"before": {"loss": 0.0}, "after": {"loss": 0.1}}})
    assert training.evaluation_rows(zero.status) == [("loss", "0", "0.1", "")]  # no change relative to zero
    full = finetune_job({**finished_status(), "adapterArtifact": None}, method="full", lora=None)
    assert "Adapter URI" not in dict(training.artifact_rows(full, []))
