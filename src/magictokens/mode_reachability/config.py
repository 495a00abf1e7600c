"""params.yaml `mode_reachability:`: transitions, where the control goes, which search, budgets."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from ..controllers import backoff, fast
from ..cotraining.config import CoTrainingConfig, decoding as stage_decoding
from ..cotraining.data import MODES
from ..errors import MagicTokensError
from ..fields import Count, Flag, NonNegativeReal, Positive, Text, params

# where the control u goes (see `slots.slot_ids`); the attacker owns the user turn only
PLACEMENTS = ("user_before", "user_after", "system")
Placement = Literal["user_before", "user_after", "system"]
SEARCHES = ("fast", "backoff")
PLACEMENT_WORDS = {"user_before": "user turn, before the request", "user_after": "user turn, after the request",
                   "system": "system prompt, before mode A's token"}


def _once_each(placements: list[str]) -> list[str]:
    if len(set(placements)) != len(placements):
        raise ValueError("list each placement at most once")
    return placements


Placements = Annotated[list[Placement], Field(min_length=1), AfterValidator(_once_each)]


@params
@dataclass
class ModeReachConfig:
    n_prompts: Positive = 50                # held-out harmful prompts per transition
    transitions: list[Text] = field(default_factory=lambda: ["positive->negative", "rejective->negative",
                                                             "negative->positive"])
    baselines: list[Text] = field(default_factory=lambda: ["sft", "sft_dpo"])
    # user_before / user_after: u in the user turn, before / after the request (what an attacker
    # can write); system: u in the system prompt before mode A's token (the operator's slot)
    placements: Placements = field(default_factory=lambda: ["user_before", "system"])
    # the placements the baselines are searched under (null: every placement). A scale may keep them to
    # the main setting, the user turn, when a second placement's baselines cost more than it can spend
    baseline_placements: list[Placement] | None = None
    search: Literal["fast", "backoff"] = "fast"     # controllers/fast.py | controllers/backoff.py
    fast: fast.FastConfig = field(default_factory=fast.FastConfig)              # search: fast
    backoff: backoff.BackoffConfig = field(default_factory=backoff.BackoffConfig)   # search: backoff
    max_new_tokens: Positive = 32           # judged generations
    # how every judged response is decoded (the search's target stays the raw argmax): "stage" = the
    # cotraining stage's decoding of record (its repetition_penalty, no_repeat_ngram_size), so a mode counts
    # here as paper B's stage counts it; "greedy" = plain greedy, how the records before it were judged
    decoding: Literal["stage", "greedy"] = "stage"
    opening_tokens: Positive = 16           # response tokens compared to find where two modes diverge
    max_prompt_chars: Positive = 400
    n_random_tokens: Count = 20             # random-magic-token baseline: strings tried
    gen_batch_size: Positive = 16
    # a cut run: no prompt is started after this many minutes of searching (null: run to the end);
    # the result then says "partial" and counts the prompts searched per transition
    search_minutes: NonNegativeReal | None = None
    # prompts where the target mode itself does not hold count in no curve: logged as skipped, unsearched;
    # true searches them too (the smoke scale's random model holds no mode: it keeps the search path run)
    search_unheld: Flag = False

    def __post_init__(self):
        for t in self.transitions:
            parse_transition(t)
        if self.n_prompts <= 0:
            raise MagicTokensError(f"mode_reachability.n_prompts must be >= 1, got {self.n_prompts}")
        bad = [p for p in self.placements if p not in PLACEMENTS]
        if bad or not self.placements or len(set(self.placements)) != len(self.placements):
            raise MagicTokensError(f"mode_reachability.placements = {list(self.placements)}: list each of "
                                   f"{', '.join(PLACEMENTS)} at most once (at least one)")
        stray = [p for p in (self.baseline_placements or []) if p not in self.placements]
        if stray:
            raise MagicTokensError(f"mode_reachability.baseline_placements = {list(self.baseline_placements)}: "
                                   f"{', '.join(stray)} is not in placements {list(self.placements)}; "
                                   f"list only placements that are searched (null: all of them)")
        if self.search not in SEARCHES:
            raise MagicTokensError(f"mode_reachability.search = {self.search!r}: use 'fast' or 'backoff'")


def baselines_at(cfg: ModeReachConfig, placement: str) -> list[str]:
    """The baselines searched with u at `placement`: all of them unless `baseline_placements` leaves it out."""
    return list(cfg.baselines) if cfg.baseline_placements is None or placement in cfg.baseline_placements else []


def parse_transition(name: str) -> tuple[str | None, str]:
    """'positive->negative' -> ('positive', 'negative'); 'none->negative' -> (None, 'negative')."""
    parts = name.split("->")
    ok = len(parts) == 2 and parts[1] in MODES and (parts[0] in MODES or parts[0] == "none")
    if not ok:
        raise MagicTokensError(f"transition {name!r}: write SOURCE->TARGET with modes from {MODES} (source may be 'none')")
    return (None if parts[0] == "none" else parts[0]), parts[1]


def search_config(cfg: ModeReachConfig):
    """The chosen search's config: a FastConfig or a BackoffConfig."""
    return cfg.fast if cfg.search == "fast" else cfg.backoff


def search_run(cfg: ModeReachConfig):
    """The chosen search: `run(model, tok, x0_ids, target_id, config, verify_model=, seed=, prefix_ids=)`."""
    return fast.run if cfg.search == "fast" else backoff.run


def judged_decoding(cfg: ModeReachConfig, ccfg: CoTrainingConfig) -> dict:
    """`chat.generate_from_ids` keywords of the judged responses: the cotraining stage's decoding of record
    (`cotraining.config.decoding`: only what differs from greedy) for `decoding: stage`, {} for greedy."""
    return stage_decoding(ccfg) if cfg.decoding == "stage" else {}
