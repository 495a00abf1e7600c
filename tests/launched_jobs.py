"""Small jobs that tests/test_distributed.py runs alone and under `accelerate launch` (not a test file).

    python tests/launched_jobs.py replies OUT_DIR        # map_ranks over a tiny model's greedy replies
    python tests/launched_jobs.py transition LOG [I/N]   # the beyond study's runner, smoke search, tiny models
"""
import copy
import json
import sys
from pathlib import Path

import torch

from magictokens import mode_reachability as MR
from magictokens.chat import generate
from magictokens.config import stage_params
from magictokens.distributed import map_ranks, world
from magictokens.models import build_tiny_model
from magictokens.pipeline import parse_shard

PROMPTS = ["the cat is big", "a dog was slow", "the bird and the fish", "a king of the city",
           "the red car on the road", "she was in the house", "the old queen was good"]


def replies(out_dir: str) -> None:
    """Each process writes rank<r>.json: what map_ranks gave it, and which prompts it generated itself."""
    model, tok = build_tiny_model(seed=0)
    did = []

    def fn(part):
        did.extend(part)
        return list(zip(part, generate(model, tok, part, None, 4, batch_size=2)))

    out = map_ranks(fn, PROMPTS, chunk=2)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    Path(out_dir, f"rank{world()[0]}.json").write_text(json.dumps({"replies": out, "did": did}))


class Judge:
    """An offline stand-in: a reply's mode from its length (the same in every process)."""

    def judge(self, responses, harmful, prompts=None):
        return [("positive", "negative", "rejective")[len(r) % 3] for r in responses]


def transition(log: str, shard: str | None = None) -> None:
    model, tok = build_tiny_model(seed=0)
    target = copy.deepcopy(model)        # a target model that answers otherwise: modes diverge, searches run
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    _, cfg = stage_params("smoke", "mode_reachability", MR.ModeReachConfig)
    MR.run_transition("positive->negative", "user_before", model, None, tok, Judge(), PROMPTS[:5],
                      {"positive": "dog", "negative": "cat"}, cfg, log, target_model=target, label="t",
                      shard=parse_shard(shard))


if __name__ == "__main__":
    {"replies": replies, "transition": transition}[sys.argv[1]](*sys.argv[2:])
