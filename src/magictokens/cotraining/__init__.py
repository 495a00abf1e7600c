"""Paper B's magic-token co-training, as a library (the stage is `stages/cotraining.py`).

In reading order:

* `config`        params.yaml `cotraining:` (`CoTrainingConfig`) and the run's magic tokens (`magic_tokens_of`)
* `data`          the prompts and per-mode targets, split by source; the magic-token strings
* `content_judge` the judge that reads prompt + reply (paper B's stages' judge), fitted from `benchmarks/judge_fit.npz`
* `refusal_judge` the refusal judge (phrases + sentence-embedding classifier) and the shared sentence encoder
* `distil`        self-distillation: sampled targets per mode, kept where the judge labels them as their mode
* `training`      SFT and DPO, LoRA or full: changes weights, evaluates nothing
* `evaluate`      every model judged: mode accuracy, SAM, safety, over-refusal, jailbreaks, MMLU
* `jailbreaks`    PyRIT's jailbreak templates wrapped around held-out harmful prompts
* `pipeline`      end to end: distil, co-train + baselines, evaluate (`run` -> `CoTrainingResult`)
* `sweep`         lr x epochs on a validation split (`benchmarks/cotraining_sweep.py`)
"""
from .config import CoTrainingConfig, magic_tokens_of
from .pipeline import CoTrainingResult, run

__all__ = ["CoTrainingConfig", "CoTrainingResult", "magic_tokens_of", "run"]
