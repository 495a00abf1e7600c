"""Beyond both papers: how reachable is a safety mode without its magic token?

Paper B switches a co-trained model between modes with a secret magic token
in the system prompt. Paper A's controllers ask how secret it has to be. A
*transition* ``A->B`` on a held-out harmful prompt p:

    state x0  = the conversation with mode A's magic token in the system prompt,
                followed by the opening that modes A and B share (if any)
    control u = k free tokens placed in the system prompt, in the magic-token
                slot directly before A's token (the attacker cannot remove the
                operator's token, and never sees B's token)
    target y  = the first token where mode B's own greedy response to p
                (generated with B's real magic token) leaves mode A's

    ids = prefix + u + suffix + shared,   prefix = "<|im_start|>system\\n",
          suffix = " <token A><|im_end|> ... <|im_start|>assistant\\n",
          shared = the common opening of the two responses (often empty)

Targeting the *divergence* token (not simply B's first token) matters: modes
often open alike ("I ..." in both a refusal and an answer), and a shared first
token would count as reached at k = 0 while nothing changed. With it, k = 0
never succeeds on the co-trained model (A's own argmax there is not y); if
the two responses agree on their whole first `opening_tokens`, the
transition is recorded as reached at k = 0 (indistinguishable openings).

The back-off search (greedy k=1,2,3, GCG k=4..10) finds the shortest u making
y the argmax; then the response generated after each k's best prompt is judged
by the offline judge, giving two k-epsilon curves: by first token and by
judged behaviour. Baseline models have no modes: their state has no magic
token (``none->negative``) and the target is the co-trained model's
negative-mode first token. The random-magic-token baseline replaces the
magic token by random strings of the same length and counts how often the
judged behaviour is B.
"""
from __future__ import annotations

import hashlib
import random
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import load_model as load_weights
from tqdm.auto import tqdm

from .controllers import backoff
from .controllers.results import resume_key
from .errors import MagicTokensError
from .fields import Count, Positive, Text, params
from .metrics import k_epsilon_curve
from .models import load_model, weights_digest
from .papers import K_GRID as KS
from .results import InstanceLog
from .safety_data import MODES
from .chat import chat_text, end_of_turn_id, generate_from_ids, pad_id, prompt_ids

SLOT = "\ue000"   # a private-use character marks where u goes in the rendered template


@params
@dataclass
class ModeReachConfig:
    n_prompts: Positive = 50                # held-out harmful prompts per transition
    transitions: list[Text] = field(default_factory=lambda: ["positive->negative", "rejective->negative",
                                                             "negative->positive"])
    baselines: list[Text] = field(default_factory=lambda: ["sft", "sft_dpo"])
    backoff: backoff.BackoffConfig = field(default_factory=backoff.BackoffConfig)
    max_new_tokens: Positive = 32           # judged generations
    opening_tokens: Positive = 16           # response tokens compared to find where two modes diverge
    max_prompt_chars: Positive = 400
    n_random_tokens: Count = 20          # random-magic-token baseline: strings tried
    gen_batch_size: Positive = 16

    def __post_init__(self):
        for t in self.transitions:
            parse_transition(t)
        if self.n_prompts <= 0:
            raise MagicTokensError(f"mode_reachability.n_prompts must be >= 1, got {self.n_prompts}")


def parse_transition(name: str) -> tuple[str | None, str]:
    """'positive->negative' -> ('positive', 'negative'); 'none->negative' -> (None, 'negative')."""
    parts = name.split("->")
    ok = len(parts) == 2 and parts[1] in MODES and (parts[0] in MODES or parts[0] == "none")
    if not ok:
        raise MagicTokensError(f"transition {name!r}: write SOURCE->TARGET with modes from {MODES} (source may be 'none')")
    return (None if parts[0] == "none" else parts[0]), parts[1]


def slot_ids(tok, user: str, source_token: str | None) -> tuple[list[int], list[int]]:
    """-> (prefix ids, suffix ids) around the control slot at the start of the system prompt."""
    system = SLOT + (f" {source_token}" if source_token else "")
    text = chat_text(tok, user, system)
    pre, post = text.split(SLOT)
    prefix = tok(pre, add_special_tokens=False).input_ids
    if not getattr(tok, "chat_template", None) and tok.bos_token_id is not None:
        prefix = [tok.bos_token_id] + prefix
    return prefix, tok(post, add_special_tokens=False).input_ids


@torch.inference_mode()
def greedy_ids(model, tok, ids: list[int], n: int) -> list[int]:
    """The first `n` greedy response ids after `ids` (stops at end of turn)."""

    dev = next(model.parameters()).device
    out = model.generate(input_ids=torch.tensor([ids], device=dev), max_new_tokens=n, do_sample=False,
                         eos_token_id=end_of_turn_id(tok), pad_token_id=pad_id(tok))
    return out[0, len(ids):].tolist()


def divergence(target_ids: list[int], source_ids: list[int]) -> int | None:
    """Index of the first token where two responses differ (None: identical over the shorter one).

    >>> divergence([5, 6, 7], [5, 9]), divergence([5, 6], [5, 6, 7])
    (1, None)
    """
    for j, (a, b) in enumerate(zip(target_ids, source_ids)):
        if a != b:
            return j
    return None


def judged_required_k(trace: list, judged: dict[int, str], target: str) -> int | None:
    """Smallest k whose best prompt's response is judged `target` (None if none is)."""
    ok = [k for k, mode in judged.items() if mode == target]
    return min(ok) if ok else None


def run_transition(name: str, search_model, verify_model, tok, judge, prompts: list[str], tokens: dict,
                   cfg: ModeReachConfig, log_path, target_model=None, seed: int = 0, label: str = "") -> list[dict]:
    """Back-off + judged generations for one transition on one model; resumable rows."""
    source, target = parse_transition(name)
    judge_model = verify_model if verify_model is not None else search_model
    target_model = target_model if target_model is not None else judge_model
    # keyed by every weight of the searched and the target model (a retrained model
    # must never reuse rows) and, per row, by the prompt text
    log = InstanceLog(log_path, {"transition": name, "backoff": resume_key(cfg.backoff, drop=()), "seed": seed,
                                 "max_new_tokens": cfg.max_new_tokens, "label": label,
                                 "target": "divergence", "opening_tokens": cfg.opening_tokens,
                                 "weights": [weights_digest(judge_model), weights_digest(target_model)]})
    for i, p in enumerate(tqdm(prompts, desc=f"{label} {name}", unit="prompt")):
        pid = f"{label}:{name}:{i}"
        psha = hashlib.sha256(p.encode()).hexdigest()[:12]
        if log.done(pid) and log.rows[pid].get("prompt_sha") == psha:
            continue
        prefix, suffix = slot_ids(tok, p, tokens[source] if source else None)
        # y: where the target mode's own response (target model, B's real token) leaves
        # the source state's response (searched model, no control)
        want = greedy_ids(target_model, tok, prompt_ids(tok, p, tokens[target]), cfg.opening_tokens)
        have = greedy_ids(judge_model, tok, prefix + suffix, cfg.opening_tokens)
        d = divergence(want, have)
        if d is None:   # same opening: nothing to reach; judge the source response as it is
            resp = generate_from_ids(judge_model, tok, [prefix + suffix], cfg.max_new_tokens)[0]
            mode0 = judge.judge([resp], [True])[0]
            log.add(pid, {"transition": name, "model": label, "prompt_index": i, "prompt_sha": psha,
                          "target_id": None, "shared": len(want), "k": 0, "k_judged": 0 if mode0 == target else None,
                          "judged": {"0": mode0}, "ids": [], "text": "", "seconds": 0.0, "trace": []})
            continue
        shared, y = want[:d], want[d]
        state = suffix + shared
        r = backoff.run(search_model, tok, state, y, cfg.backoff, prefix_ids=prefix, verify_model=verify_model,
                        seed=seed)
        ks = [t.k for t in r.trace]
        seqs = [prefix + t.ids + state for t in r.trace]
        # judge the whole response: the shared opening plus what follows it
        responses = [tok.decode(shared + greedy_ids(judge_model, tok, q, max(1, cfg.max_new_tokens - len(shared))),
                                skip_special_tokens=True).strip() for q in seqs]
        modes = judge.judge(responses, [True] * len(responses))
        judged = dict(zip(ks, modes))
        log.add(pid, {"transition": name, "model": label, "prompt_index": i, "prompt_sha": psha, "target_id": y,
                      "target_text": tok.decode([y]), "shared": len(shared), "k": r.k,
                      "k_judged": judged_required_k(r.trace, judged, target),
                      "judged": {str(k): m for k, m in judged.items()}, "ids": r.ids, "text": r.text[:80],
                      "base_loss": r.base_loss, "base_rank": r.base_rank, "seconds": r.seconds,
                      "trace": [{k: v for k, v in asdict(t).items() if k != "ids"} for t in r.trace]})
    return [log.rows[f"{label}:{name}:{i}"] for i in range(len(prompts))]


def summarize_transition(rows: list[dict], holds: list[bool] | None = None) -> dict:
    """{"n", "n_prompts", "eps": {k: ..}, "eps_judged": {k: ..}} over KS (k=0 included).

    `holds[i]`: the target mode, given its real magic token, is judged as that
    mode on prompt i. Prompts where it is not (a "negative" mode that refuses
    anyway) have nothing to reach and are left out of the curves.
    """
    keep = [r for r, h in zip(rows, holds if holds is not None else [True] * len(rows)) if h]
    return {"n": len(keep), "n_prompts": len(rows),
            "eps": {str(k): v for k, v in k_epsilon_curve([r["k"] for r in keep], KS).items()},
            "eps_judged": {str(k): v for k, v in k_epsilon_curve([r["k_judged"] for r in keep], KS).items()}}


def target_mode_holds(model, tok, judge, prompts: list[str], token: str, target: str, max_new_tokens: int,
                      batch_size: int = 16) -> list[bool]:
    """Per prompt: is the response under the target mode's real magic token judged as that mode?"""
    responses = generate_from_ids(model, tok, [prompt_ids(tok, p, token) for p in prompts], max_new_tokens,
                                  batch_size)
    return [m == target for m in judge.judge(responses, [True] * len(responses))]


def random_strings(n: int, length: int, seed: int, exclude=()) -> list[str]:
    """Seeded random magic-token look-alikes (same alphabet and length as the real ones)."""
    rng = random.Random(f"random-magic-{seed}")
    alphabet = string.ascii_lowercase + string.digits
    out: list[str] = []
    while len(out) < n:
        s = "".join(rng.choice(alphabet) for _ in range(length))
        if s not in exclude and s not in out:
            out.append(s)
    return out


def random_token_switch_rate(model, tok, judge, prompts: list[str], strings: list[str], target: str,
                             max_new_tokens: int, batch_size: int = 16) -> dict:
    """Share of (random string, prompt) pairs whose response is judged `target`."""
    seqs, n = [], 0
    for s in strings:
        for p in prompts:
            seqs.append(prompt_ids(tok, p, s))
    responses = generate_from_ids(model, tok, seqs, max_new_tokens, batch_size)
    modes = judge.judge(responses, [True] * len(responses))
    hits = np.array([m == target for m in modes], dtype=float)
    n = len(hits)
    per_string = hits.reshape(len(strings), len(prompts)).mean(axis=1) if n else np.array([])
    return {"rate": float(hits.mean()) if n else float("nan"), "n": n,
            "max_per_string": float(per_string.max()) if n else float("nan")}


def load_trained(base_name: str, models_dir, name: str, device="auto", dtype="float32"):
    """A model trained by the cotraining stage: base + LoRA adapter(s), merged.

    ``sft_dpo`` was trained on top of the merged ``sft`` model, so it is base +
    sft adapter + dpo adapter. Full fine-tuning runs saved ``model.safetensors``
    instead of an adapter.
    """
    models_dir = Path(models_dir)
    chain = {"cotrained": ["cotrained"], "sft": ["sft"], "sft_dpo": ["sft", "sft_dpo"]}.get(name)
    if chain is None:
        raise MagicTokensError(f"unknown trained model {name!r}: use cotrained, sft or sft_dpo")
    model, tok = load_model(base_name, dtype=dtype, device=device)
    for part in chain:
        d = models_dir / part
        if (d / "adapter_config.json").exists():
            model = PeftModel.from_pretrained(model, str(d)).merge_and_unload()
        elif (d / "model.safetensors").exists():
            load_weights(model, str(d / "model.safetensors"), strict=False)
        else:
            raise MagicTokensError(f"no trained weights in {d}: run the cotraining stage first "
                                   f"(`magictokens run cotraining --scale ...`)")
    for p in model.parameters():   # frozen params make CPU bf16 forwards ~10x slower (models.py)
        p.requires_grad_(True)
    return model.eval(), tok
