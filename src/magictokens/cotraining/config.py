"""Paper B's settings: params.yaml `cotraining:` as one dataclass, and the run's magic tokens."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..fields import Count, Positive, PositiveReal, Share, Text, params
from . import distil
from .data import MODES, magic_tokens
from .training import DPOConfig, TrainConfig


@params
@dataclass
class CoTrainingConfig:
    """params.yaml `cotraining:` section."""

    n_train_harmful: Count = 30
    n_train_benign: Count = 15
    n_eval_harmful: Count = 24
    n_eval_benign: Count = 12
    n_xstest: Count = 16
    max_prompt_chars: Positive = 400
    data_seed: Count | None = None       # prompts + self-distilled targets (null: the run's seed). Fixed, seeds
                                         # share one data set and its cached targets and differ in training only
    magic_tokens: dict[str, Text] | None = None   # null: generated from the seed (recorded in the json)
    magic_token_length: Positive = 8
    untokened_positive_share: Share = 0.0  # share of positive rows also trained with no system prompt
    untokened_benign_share: Share = 1.0    # share of benign prompts' positive rows also trained with no system
                                           # prompt: the default (no token) stays helpful
    positive_harmful_repeat: Positive = 1  # each harmful prompt's positive row trained this many times per epoch
    targets: Literal["distilled", "datasets"] = "distilled"   # paper B: self-distilled + judge-filtered
    distil: distil.DistilConfig = field(default_factory=distil.DistilConfig)
    # crossencoder: rules + prompt-reply cross-encoding, fitted on labelled replies of the models it scores
    # (judge.py); content: the earlier bi-encoder judge (content_judge.py); refusal: refusal detector
    judge: Literal["crossencoder", "content", "refusal"] = "crossencoder"
    train: TrainConfig = field(default_factory=TrainConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    distil_max_new_tokens: Positive = 48
    max_new_tokens: Positive = 48        # judged generations: the length the judge's labels were read at
    gen_batch_size: Positive = 16
    # judged generations are greedy; a 135M model's greedy replies loop, which reads as invalid in any mode.
    # repetition_penalty > 1 / no_repeat_ngram_size n > 0: transformers' logits processors (chat.generate)
    repetition_penalty: PositiveReal = 1.0
    no_repeat_ngram_size: Count = 0
    mmlu_n: Count = 40
    judge_n_alpaca: Count = 300
    judge_n_xstest: Count | None = None   # cap on XSTest completions per side (smoke)
    judge_max_length: Positive = 64
    baselines: list[Literal["sft", "sft_dpo", "base"]] = field(default_factory=lambda: ["sft", "sft_dpo", "base"])
    jailbreak_per_prompt: Count = 1         # PyRIT templates wrapped around each held-out harmful prompt (0: skip)
    jailbreak_max_chars: Positive = 1200    # longer templates are left out (CPU generation budget)
    jailbreak_max_prompt_tokens: Positive = 384
    sam_boot: Count = 500                   # bootstrap resamples (prompts) of the SAM interval
    sam_perm: Count = 500                   # within-prompt label permutations of the SAM null
    # CPU intra-op threads for the whole stage: the count sets the matmul reduction order, so a
    # seeded run at 1 and at 2 threads trains different models (measured); null = torch's default
    threads: Positive | None = 2


def magic_tokens_of(cfg: CoTrainingConfig, seed: int) -> dict:
    """The run's magic tokens, {mode: string, "random": string}: params.yaml's `magic_tokens` when given,
    else generated from the run seed (`data.magic_tokens`). Both stages that need them ask here."""
    return cfg.magic_tokens or magic_tokens(seed, len(MODES) + 1, cfg.magic_token_length)


def data_seed(cfg: CoTrainingConfig, seed: int) -> int:
    """The seed of the prompts and their self-distilled targets: `cfg.data_seed`, or the run's seed."""
    return seed if cfg.data_seed is None else cfg.data_seed


GREEDY = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}     # plain greedy: the processors off


def decoding_of(params: dict) -> dict:
    """The judged generations' decoding named by a run's params (a `cotraining` section, or a record's
    "params"), as `chat.generate` keyword arguments: only what differs from plain greedy, so a cache key
    or a record made before these settings existed still names the same replies."""
    return {k: params[k] for k, off in GREEDY.items() if params.get(k, off) != off}


def decoding(cfg: CoTrainingConfig) -> dict:
    """`decoding_of` for a config."""
    return decoding_of({k: getattr(cfg, k) for k in GREEDY})
