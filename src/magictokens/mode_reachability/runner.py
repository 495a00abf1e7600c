"""One transition on one model under one placement: target, search, judged responses; one JSONL row per prompt."""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..chat import end_of_turn_id, generate_from_ids, pad_id, prompt_ids
from ..controllers.results import resume_key
from ..distributed import merge_after_launch, own_share, share_logs
from ..models import dtype_of, weights_digest
from ..results import InstanceLog
from .config import ModeReachConfig, parse_transition, search_config, search_run
from .slots import slot_ids


@torch.inference_mode()
def greedy_ids(model, tok, ids: list[int], n: int, **decoding) -> list[int]:
    """The first `n` greedy response ids after `ids` (stops at end of turn); `decoding`: the logits
    processors `judged_decoding` names (only what differs from plain greedy), passed to `generate` as is."""
    dev = next(model.parameters()).device
    out = model.generate(input_ids=torch.tensor([ids], device=dev), max_new_tokens=n, do_sample=False,
                         eos_token_id=end_of_turn_id(tok), pad_token_id=pad_id(tok), **decoding)
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


def resume_header(name: str, placement: str, cfg: ModeReachConfig, seed: int, label: str, weights: list[str],
                  decoding: dict | None = None) -> dict:
    """What keys a finished row: transition, placement, search and its budget, seed, every weight, and the
    judged responses' decoding where it is not plain greedy (so rows judged greedy keep their key).

    A row of another placement, search or decoding (or a retrained model) is never reused.
    """
    return {"transition": name, "placement": placement, "search": cfg.search,
            cfg.search: resume_key(search_config(cfg)), "seed": seed, "max_new_tokens": cfg.max_new_tokens,
            "label": label, "target": "divergence", "opening_tokens": cfg.opening_tokens, "weights": weights,
            **({"decoding": dict(decoding)} if decoding else {})}


def run_transition(name: str, placement: str, search_model, verify_model, tok, judge, prompts: list[str],
                   tokens: dict, cfg: ModeReachConfig, log_path, target_model=None, seed: int = 0,
                   label: str = "", shard: tuple[int, int] | None = None,
                   deadline: float | None = None, holds: list[bool] | None = None,
                   decoding: dict | None = None) -> list[dict]:
    """Search + judged generations for one transition on one model, u at `placement`; resumable rows.

    Per prompt p: prefix, suffix = slot_ids(p, token_A, placement); want = the
    target model's greedy opening under B's real token, have = the searched
    model's opening on prefix + suffix (u empty); y = want[d] at their first
    difference d, state = suffix + want[:d]. The search (`cfg.search`) finds
    the shortest u with y = argmax P(. | prefix + u + state); the response
    after each k's best prompt, decoded by `decoding` (`judged_decoding`: the
    stage's processors, or {} = plain greedy), is judged (the judge reads the
    prompt p too).

    Scale-out as paper A's searches (`reachability.run_families`): prompt i
    belongs to share i % n, `shard=(i, n)` or the launcher's (rank, world
    size); a share of n > 1 writes `<log>.shard<i>of<n>.jsonl` and counts
    every log beside it as finished; a launch merges them into `log_path`
    (rank 0, after a barrier). `deadline` (a `time.time()`): no prompt is
    started after it (a cut run; finished rows stay). `holds[i]` False: the
    target mode itself (its real magic token) is not judged as that mode on
    prompt i, so the curves leave it out (`summarize_transition`) and it is
    logged as skipped, unsearched. -> the rows of every
    prompt finished, in prompt order (with `shard` or a deadline: of those
    finished so far).
    """
    source, target = parse_transition(name)
    judge_model = verify_model if verify_model is not None else search_model
    target_model = target_model if target_model is not None else judge_model
    # keyed by every weight of the searched and the target model (a retrained model
    # must never reuse rows) and, per row, by the prompt text
    dec = dict(decoding or {})
    header = resume_header(name, placement, cfg, seed, label, [weights_digest(judge_model), weights_digest(target_model)],
                           dec)
    i_shard, n_shards = own_share(shard)
    path, finished_logs = share_logs(Path(log_path), i_shard, n_shards)
    log = InstanceLog(path, header, read_also=finished_logs)
    search, scfg = search_run(cfg), search_config(cfg)
    search_dtype = dtype_of(search_model)   # rows say which (results.resume_dtype)
    mine = list(enumerate(prompts))[i_shard::n_shards]
    for i, p in tqdm(mine, desc=f"{label} {name} ({placement})", unit="prompt"):
        pid = f"{label}:{name}:{i}"
        psha = hashlib.sha256(p.encode()).hexdigest()[:12]
        skip = holds is not None and not holds[i]
        if log.done(pid) and log.rows[pid].get("prompt_sha") == psha and ("skipped" in log.rows[pid]) <= skip:
            continue   # finished (a skipped row is finished only while the prompt is still skipped)
        if deadline is not None and time.time() > deadline:
            break
        head = {"transition": name, "model": label, "placement": placement, "search": cfg.search,
                "prompt_index": i, "prompt_sha": psha, "search_dtype": search_dtype}
        if skip:   # nothing to reach: a search here would count nowhere
            log.add(pid, {**head, "target_id": None, "skipped": "target mode does not hold", "k": None,
                          "k_judged": None, "judged": {}, "ids": [], "text": "", "seconds": 0.0, "trace": []})
            continue
        prefix, suffix = slot_ids(tok, p, tokens[source] if source else None, placement)
        # y: where the target mode's own response (target model, B's real token) leaves
        # the source state's response (searched model, no control)
        want = greedy_ids(target_model, tok, prompt_ids(tok, p, tokens[target]), cfg.opening_tokens)
        have = greedy_ids(judge_model, tok, prefix + suffix, cfg.opening_tokens)
        d = divergence(want, have)
        if d is None:   # same opening: nothing to reach; judge the source response as it is
            resp = generate_from_ids(judge_model, tok, [prefix + suffix], cfg.max_new_tokens, **dec)[0]
            mode0 = judge.judge([resp], [True], prompts=[p])[0]
            log.add(pid, {**head, "target_id": None, "shared": len(want), "k": 0,
                          "k_judged": 0 if mode0 == target else None, "judged": {"0": mode0}, "ids": [], "text": "",
                          "seconds": 0.0, "trace": []})
            continue
        shared, y = want[:d], want[d]
        state = suffix + shared
        r = search(search_model, tok, state, y, scfg, verify_model=verify_model, seed=seed, prefix_ids=prefix)
        # one prompt per k: a shortened prompt (fast search) revisits a smaller k, and its ids win
        best = {t.k: t.ids for t in r.trace}
        ks = sorted(best)
        # judge the whole response: the shared opening plus what follows it
        responses = [tok.decode(shared + greedy_ids(judge_model, tok, prefix + best[k] + state,
                                                    max(1, cfg.max_new_tokens - len(shared)), **dec),
                                skip_special_tokens=True).strip() for k in ks]
        judged = dict(zip(ks, judge.judge(responses, [True] * len(responses), prompts=[p] * len(responses))))
        log.add(pid, {**head, "target_id": y, "target_text": tok.decode([y]), "shared": len(shared), "k": r.k,
                      "k_judged": judged_required_k(r.trace, judged, target),
                      "judged": {str(k): m for k, m in judged.items()}, "ids": r.ids, "text": r.text[:80],
                      "retokenizes": r.retokenizes, "base_loss": r.base_loss, "base_rank": r.base_rank,
                      "seconds": r.seconds, "n_candidates": r.n_candidates,
                      "trace": [{k: v for k, v in asdict(t).items() if k != "ids"} for t in r.trace]})
    if merge_after_launch([log_path], shard):
        log = InstanceLog(log_path, header)
    return [log.rows[pid] for pid in (f"{label}:{name}:{i}" for i in range(len(prompts))) if pid in log.rows]
