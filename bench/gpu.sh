#!/usr/bin/env bash
# Short, self-contained GPU check (run where an accelerator is available): bf16 training of a
# wide MLP, raw PyTorch loop vs the Kubeforge trainer (interleaved), and MFU against a
# bf16 matmul ceiling measured in the same run. Writes one JSON file (default bench/results/gpu.json).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench/results/gpu.json}"
PY="${PY:-.venv/bin/python}"; [ -x "$PY" ] || PY=python3
mkdir -p "$(dirname "$out")"
PYTHONPATH=operator:trainer_image "$PY" - "$out" <<'PYEOF'
import json, os, subprocess, sys, statistics, tempfile, time
import torch
assert torch.cuda.is_available(), "no GPU"
out = sys.argv[1]
dev = torch.cuda.get_device_name(0)
n = 8192
a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16); b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
for _ in range(3): a @ b
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(20): a @ b
torch.cuda.synchronize(); ceiling = 2 * n**3 * 20 / (time.perf_counter() - t)
B = 4096
spec = {"nodes": 1, "recipe": {"model": "mlp", "dataset": "synthetic", "epochs": 1, "maxSteps": 60, "batchSize": B,
        "precision": "bf16", "optimizer": "adamw", "lrSchedule": "constant",
        "modelConfig": {"hidden": 8192, "layers": 4, "samples": 262144, "features": 1024}},
        "checkpoint": {"intervalSteps": 1000000, "keep": 1}}
env = {**os.environ, "KUBEFORGE_SPEC": json.dumps(spec), "PYTHONPATH": "operator:trainer_image"}
def ours():
    storage = tempfile.mkdtemp(); e = {**env, "KUBEFORGE_STORAGE_DIR": storage, "KUBEFORGE_PROGRESS_PORT": "0"}
    subprocess.run([sys.executable, "-m", "kubeforge_trainer", "train"], env=e, check=True, capture_output=True)
    rows = [json.loads(l) for l in open(f"{storage}/metrics.jsonl") if '"train"' in l]
    return (rows[-2]["step"] - rows[0]["step"]) / (rows[-2]["time"] - rows[0]["time"])
def raw():
    from kubeforge_api.trainingjob import TrainingJobSpec
    from kubeforge_trainer.data import load
    from kubeforge_trainer.models import architecture, build, loss_fn
    r = TrainingJobSpec.model_validate(spec).recipe
    data = load(r, "."); arch = architecture("mlp", data, r.model_config_)
    m = build(arch).cuda(); opt = torch.optim.AdamW(m.parameters(), lr=r.learning_rate)
    x, y = data.x_train[:B].cuda(), data.y_train[:B].cuda()
    for i in range(60):
        if i == 5: torch.cuda.synchronize(); t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn("classify", m(x), y)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    params = sum(p.numel() for p in m.parameters())
    return 55 / (time.perf_counter() - t), params
ratios, mfus = [], []
for _ in range(3):
    rate_raw, params = raw(); rate_ours = ours()
    ratios.append(rate_ours / rate_raw)
    mfus.append(rate_ours * B * 6 * params / ceiling)
res = {"device": dev, "bf16_matmul_tflops": ceiling / 1e12, "trainer_vs_raw_loop_median": statistics.median(ratios),
       "ratios": ratios, "mfu_median": statistics.median(mfus), "note": "trainer steps/s include its data pipeline on CPU",
       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
json.dump(res, open(out, "w"), indent=2); print(json.dumps(res, indent=2))
PYEOF
