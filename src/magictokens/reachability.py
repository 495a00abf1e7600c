"""Paper A's reachability experiments: instances, resumable runs, summaries.

An *instance* is (x0, y): a state of |x0| tokens and one target token. Three
families (paper A, Sec. 5):

* ``true_token``   x0 = a random Wikitext span, y = the token that follows it
* ``top75``        y = one of the model's own `top_n` most likely next tokens
* ``uniform_rank`` y = the tokens at ranks 0, V/n, 2V/n, ... of P(. | x0)

Each instance runs a back-off search, `method: fast` (controllers/fast.py, the
CPU method of record) or `method: paper` (controllers/backoff.py, the authors'
Algorithm 1 and budget, for a GPU); its row is appended to a JSONL log
(`instances/reachability/<method>/<family>.jsonl`) as soon as it finishes, so a
rerun resumes. Each instance searches with its own seed (`instance_seed`).
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .controllers import backoff, fast
from .errors import MagicTokensError
from .metrics import k_epsilon_curve, pearson, wilson_ci
from .results import InstanceLog

ALL_KS = [0, 1, 2, 3, 4, 6, 8, 10]
HEADING = re.compile(r"^\s*=+ .* =+\s*$")


@dataclass
class TrueTokenConfig:
    source: str = "wikitext"            # wikitext | authors_csv
    lengths: list[int] = field(default_factory=lambda: [8, 10, 16, 22, 32])
    n_per_len: int = 200                # paper: 1,000 per length for GPT-2


@dataclass
class Top75Config:
    n_x0_per_len: int = 5               # paper: 25 x0
    lengths: list[int] = field(default_factory=lambda: [8, 10, 16, 22, 32])
    top_n: int = 75
    n_targets: int = 75                 # < top_n: one rank from each of n_targets equal strata of 0..top_n-1


@dataclass
class UniformRankConfig:
    n_x0_per_len: int = 4               # 20 x0 over the five lengths
    lengths: list[int] = field(default_factory=lambda: [8, 10, 16, 22, 32])
    n_ranks: int = 185                  # ranks 0, V/n, 2V/n, ...: every ~265th rank of a 49k vocabulary


@dataclass
class ReachabilityConfig:
    true_token: TrueTokenConfig = field(default_factory=TrueTokenConfig)
    top75: Top75Config = field(default_factory=Top75Config)
    uniform_rank: UniformRankConfig = field(default_factory=UniformRankConfig)
    method: str = "fast"                # fast (CPU method of record) | paper (the authors' Algorithm 1 budget)
    backoff: backoff.BackoffConfig = field(default_factory=backoff.BackoffConfig)   # method: paper
    fast: fast.FastConfig = field(default_factory=fast.FastConfig)                  # method: fast
    hist_top: int = 40
    # Start no new instance after this many minutes of the stage's searches (null: run
    # them all). A cut run aggregates the finished instances, a seeded random subset of
    # each family, and marks itself partial in the json and on every figure.
    search_minutes: float | None = None

    def __post_init__(self):
        if self.method not in ("fast", "paper"):
            raise MagicTokensError(f"reachability.method={self.method!r}: use 'fast' or 'paper'")
        for name, lengths in (("true_token", self.true_token.lengths), ("top75", self.top75.lengths),
                              ("uniform_rank", self.uniform_rank.lengths)):
            if not lengths or any(int(n) <= 0 for n in lengths):
                raise MagicTokensError(f"reachability.{name}: x0 lengths must be positive integers, got {lengths}")


@dataclass
class Instance:
    id: str
    x0_ids: list[int]
    target_id: int
    kind: str
    meta: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- instances


def paragraphs(text: str) -> list[str]:
    """Wikitext body paragraphs: one per line, headings (`` = Title = ``) and blank lines dropped."""
    return [line for line in text.splitlines() if line.strip() and not HEADING.match(line)]


def sample_wikitext_instances(tokenizer, text: str, lengths, n_per_len: int, seed: int,
                              kind: str = "true_token") -> list[Instance]:
    """Seeded random spans inside one Wikitext paragraph: x0 = p[s:s+L], y = p[s+L].

    As the authors sampled within single rows of Wikitext-103: x0 and y never
    straddle a heading or a line break. Every (paragraph, start) with room for
    L + 1 tokens is equally likely; `meta` records the paragraph and the start.
    """
    if not text.strip():
        raise MagicTokensError("the Wikitext source is empty: run `magictokens data`")
    paras = [tokenizer(p, add_special_tokens=False).input_ids for p in paragraphs(text)]
    rng = np.random.default_rng(seed)
    out = []
    for L in lengths:
        # every valid start, as (paragraph, offset) pairs in text order
        sizes = np.array([max(0, len(p) - L) for p in paras])               # starts with a next token
        total = int(sizes.sum())
        if total == 0:
            raise MagicTokensError(f"no Wikitext paragraph holds {L + 1} tokens, too few for |x0| = {L}")
        flat = np.sort(rng.choice(total, size=min(n_per_len, total), replace=False))
        bounds = np.cumsum(sizes)
        for j, f in enumerate(int(v) for v in flat):
            pi = int(np.searchsorted(bounds, f, side="right"))
            s = f - (int(bounds[pi - 1]) if pi else 0)
            ids = paras[pi]
            out.append(Instance(f"{kind}-L{L}-{j}", ids[s:s + L], ids[s + L], kind,
                                {"length": L, "paragraph": pi, "start": s}))
    return out


def authors_csv_instances(tokenizer, csv_path: str | Path, lengths, n_per_len: int, seed: int) -> list[Instance]:
    """Paper A's own x0 set (column `question`, next token `answer`).

    The texts are re-tokenized with this model's tokenizer; rows whose answer is
    not exactly one token are dropped. `length` is the authors' GPT-2 length, so
    a GPT-2 user compares like for like (and gets the same ids back).
    """
    import ast

    import pandas as pd

    df = pd.read_csv(csv_path, keep_default_na=False)
    if "question" not in df or "answer" not in df:
        raise MagicTokensError(f"{csv_path} needs columns 'question' and 'answer'")
    rng = np.random.default_rng(seed)
    out = []
    gpt2_len = df["question_ids"].map(lambda s: len(ast.literal_eval(s))) if "question_ids" in df else None
    for L in lengths:
        rows = df[gpt2_len == L] if gpt2_len is not None else df
        picked = []
        for i in rng.permutation(len(rows)):
            q, a = rows.iloc[int(i)]["question"], rows.iloc[int(i)]["answer"]
            x0 = tokenizer(q, add_special_tokens=False).input_ids
            y = tokenizer(a, add_special_tokens=False).input_ids
            if len(y) == 1 and x0:
                picked.append(Instance(f"true_token-L{L}-{len(picked)}", x0, y[0], "true_token",
                                       {"length": L, "csv_row": int(rows.index[int(i)])}))
            if len(picked) == n_per_len:
                break
        out += picked
    return out


@torch.inference_mode()
def next_token_logits(model, x0_ids) -> torch.Tensor:
    """(|x0|,) -> (V,) fp32 logits of the uncontrolled next token."""
    ids = torch.as_tensor(x0_ids, device=model.device)[None]
    return model(input_ids=ids, logits_to_keep=1).logits[0, -1].float().cpu()


def top_n_instances(model, x0s: list[Instance], top_n: int, n_targets: int, seed: int) -> list[Instance]:
    """Targets among the model's own `top_n` next tokens: one seeded rank from each of
    `n_targets` equal strata of 0..top_n-1 (all of them when n_targets = top_n)."""
    if not 0 < n_targets <= top_n:
        raise MagicTokensError(f"top75.n_targets={n_targets}: want 1 <= n_targets <= top_n={top_n}")
    rng = np.random.default_rng(seed)
    out = []
    for x in x0s:
        order = torch.argsort(next_token_logits(model, x.x0_ids), descending=True)[:top_n]
        ranks = [int(rng.choice(stratum)) for stratum in np.array_split(np.arange(top_n), n_targets)]
        for r in ranks:
            out.append(Instance(f"top75-{x.id}-r{int(r)}", x.x0_ids, int(order[r]), "top75",
                                {"length": len(x.x0_ids), "rank": int(r)}))
    return out


def uniform_rank_instances(model, x0s: list[Instance], n_ranks: int) -> list[Instance]:
    """Targets at ranks 0, V//n, 2V//n, ... of the uncontrolled distribution."""
    out = []
    for x in x0s:
        order = torch.argsort(next_token_logits(model, x.x0_ids), descending=True)
        step = max(1, len(order) // n_ranks)
        for r in range(0, step * n_ranks, step):
            out.append(Instance(f"uniform-{x.id}-r{r}", x.x0_ids, int(order[r]), "uniform_rank",
                                {"length": len(x.x0_ids), "rank": r}))
    return out


# ----------------------------------------------------------------------------- running


def build_instances(cfg: ReachabilityConfig, tokenizer, model, seed: int, text: str,
                    authors_csv: str | Path | None = None) -> dict[str, list[Instance]]:
    """The three families of one run, exactly as the notebook and `magictokens search` build them."""
    tt, t75, ur = cfg.true_token, cfg.top75, cfg.uniform_rank
    if tt.source == "wikitext":
        true = sample_wikitext_instances(tokenizer, text, tt.lengths, tt.n_per_len, seed)
    elif tt.source == "authors_csv":
        if authors_csv is None:
            raise MagicTokensError("true_token.source=authors_csv needs data/magic_words/k10_gpt2_wiki5k_init.csv")
        true = authors_csv_instances(tokenizer, authors_csv, tt.lengths, tt.n_per_len, seed)
    else:
        raise MagicTokensError(f"reachability.true_token.source={tt.source!r}: use 'wikitext' or 'authors_csv'")
    x0_75 = sample_wikitext_instances(tokenizer, text, t75.lengths, t75.n_x0_per_len, seed + 1, kind="x0")
    x0_ur = sample_wikitext_instances(tokenizer, text, ur.lengths, ur.n_x0_per_len, seed + 2, kind="x0")
    return {"true_token": true,
            "top75": top_n_instances(model, x0_75, t75.top_n, t75.n_targets, seed),
            "uniform_rank": uniform_rank_instances(model, x0_ur, ur.n_ranks)}


def instance_seed(seed: int, instance_id: str) -> int:
    """Each instance's own search seed: a hash of the run seed and its id (stable across runs and shards)."""
    return int(hashlib.sha256(f"{seed}:{instance_id}".encode()).hexdigest()[:8], 16)


def method_config(cfg: ReachabilityConfig):
    """The search config of the chosen method: FastConfig or BackoffConfig."""
    return cfg.fast if cfg.method == "fast" else cfg.backoff


def log_dir(out_dir: str | Path, method: str) -> Path:
    """Where a method's per-instance rows live: <results>/instances/reachability/<method>/."""
    return Path(out_dir) / "instances" / "reachability" / method


def resume_header(config, seed: int, weights: str) -> dict:
    """What keys a finished row (`InstanceLog`): the method and its budget, the seed, the weights.

    Batch sizes are left out: they only chunk the candidates of a step into
    forwards, so they change speed and memory, not the search. A GPU run at
    8192 candidates per forward thus resumes rows a CPU run made at 256 (each
    row still records its own batch sizes, beside its timings).
    """
    b = asdict(config)
    if isinstance(config, fast.FastConfig):
        b["coordinate"].pop("batch_size", None)
        return {"method": "fast", "fast": b, "seed": seed, "seeding": "per_instance", "weights": weights}
    for part in ("greedy", "gcg"):
        b[part].pop("batch_size", None)
    return {"backoff": b, "seed": seed, "seeding": "per_instance", "weights": weights}


def batch_sizes_of(config) -> dict:
    if isinstance(config, fast.FastConfig):
        return {"coordinate": config.coordinate.batch_size}
    return {"greedy": config.greedy.batch_size, "gcg": config.gcg.batch_size}


def run_families(families: dict[str, list[Instance]], search_model, tokenizer, config,
                 log_dir: str | Path, verify_model=None, seed: int = 0,
                 deadline: float | None = None, shard: tuple[int, int] | None = None) -> dict[str, list[dict]]:
    """Back-off search on every instance not yet in its family's log (`log_dir/<family>.jsonl`).

    `config`: a `fast.FastConfig` (fast search) or a `backoff.BackoffConfig`
    (the authors' Algorithm 1). -> {family: finished rows, in instance order}.
    Families are interleaved round-robin, each in a seeded random order, so a
    run cut by `deadline` (a time.time() value: start no new instance after it,
    e.g. one time-limited GPU call) has finished a random subset of *every*
    family, not all of the first family and none of the rest; the next run
    resumes.

    `shard=(i, n)`: search only every n-th instance of each family's seeded
    order, starting at i, so n processes (own log dirs, rows concatenated
    afterwards) share one GPU; rows record n, since their seconds are then
    shared-device timings.
    """
    import dataclasses
    import itertools
    import time

    from .controllers import greedy
    from .models import fingerprint

    weights = fingerprint(verify_model if verify_model is not None else search_model)
    header = resume_header(config, seed, weights)
    batch_sizes = batch_sizes_of(config)
    is_fast = isinstance(config, fast.FastConfig)
    logs = {name: InstanceLog(Path(log_dir) / f"{name}.jsonl", header) for name in families}

    def finished(name: str, x: Instance) -> bool:  # same id *and* same content (N or seed may have changed)
        row = logs[name].rows.get(x.id)
        return row is not None and row["x0_ids"] == list(x.x0_ids) and row["target_id"] == x.target_id

    i_shard, n_shards = shard or (0, 1)
    if not 0 <= i_shard < n_shards:
        raise MagicTokensError(f"shard {i_shard}/{n_shards}: want 0 <= i < n")
    todo = {}
    for name, insts in families.items():
        # results do not depend on the order; a cut run's finished set does. The order is
        # fixed by the seed alone, so a shard holds the same instances in every call.
        order = list(insts)
        random.Random(f"order-{seed}").shuffle(order)
        todo[name] = [(name, x) for x in order[i_shard::n_shards] if not finished(name, x)]
    queue = [job for group in itertools.zip_longest(*todo.values()) for job in group if job is not None]

    # Whole-vocabulary greedy: the k=1 sweep of an x0 scores every target of that x0 at
    # once (top-75: 75 targets, uniform rank: 185), computed when the first of them needs it.
    targets_of: dict[tuple, list[int]] = {}
    for _, x in queue:
        targets_of.setdefault(tuple(x.x0_ids), []).append(x.target_id)
    sweeps: dict[tuple, dict] = {}

    def first_step(x: Instance):
        key = tuple(x.x0_ids)
        if key in sweeps:   # reused: its cost was counted by the instance that ran it
            return dataclasses.replace(sweeps[key][x.target_id], n_scored=0, seconds=0.0)
        sweeps[key] = greedy.shared_first_steps(search_model, tokenizer, x.x0_ids, targets_of[key], config.greedy)
        return sweeps[key][x.target_id]

    share = not is_fast and config.greedy.candidates is None and bool(config.greedy_ks)
    for name, x in tqdm(queue, desc="back-off: " + ", ".join(families), unit="inst", disable=not queue):
        if deadline is not None and time.time() > deadline:
            break
        x_seed = instance_seed(seed, x.id)
        if is_fast:
            r = fast.run(search_model, tokenizer, x.x0_ids, x.target_id, config, verify_model=verify_model, seed=x_seed)
        else:
            shared = share and len(targets_of[tuple(x.x0_ids)]) > 1
            r = backoff.run(search_model, tokenizer, x.x0_ids, x.target_id, config, verify_model=verify_model,
                            seed=x_seed, first_step=(lambda x=x: first_step(x)) if shared else None)
        logs[name].add(x.id, {"kind": x.kind, "x0_ids": list(x.x0_ids), "target_id": x.target_id, "meta": x.meta,
                              **asdict(r), "instance_seed": x_seed,
                              # timings depend on what else the machine ran: keep the load beside them
                              "load_avg_1min": os.getloadavg()[0], "shards": n_shards, "batch_sizes": batch_sizes,
                              "threads": torch.get_num_threads()})
    return {name: [logs[name].rows[x.id] for x in insts if finished(name, x)] for name, insts in families.items()}


def run_instances(instances: list[Instance], search_model, tokenizer, config,
                  log_path: str | Path, verify_model=None, seed: int = 0, deadline: float | None = None) -> list[dict]:
    """One family: `run_families` with the log at `log_path`."""
    log_path = Path(log_path)
    return run_families({log_path.stem: instances}, search_model, tokenizer, config, log_path.parent,
                        verify_model=verify_model, seed=seed, deadline=deadline)[log_path.stem]


def summarize(rows: list[dict], ks=ALL_KS, seed: int = 0) -> dict:
    """n, eps(k), eps by |x0| (with their n), Wilson 95% intervals."""
    req = [r["k"] for r in rows]
    by_len: dict[str, list] = {}
    for r in rows:
        by_len.setdefault(str(r["meta"]["length"]), []).append(r["k"])
    return {"n": len(rows),
            "eps": {str(k): v for k, v in k_epsilon_curve(req, ks).items()},
            "eps_by_len": {L: {str(k): v for k, v in k_epsilon_curve(v_, ks).items()}
                           for L, v_ in sorted(by_len.items(), key=lambda kv: int(kv[0]))},
            "n_by_len": {L: len(v_) for L, v_ in sorted(by_len.items(), key=lambda kv: int(kv[0]))},
            "ci95": {str(k): v for k, v in wilson_ci(req, ks).items()}, "interval": "wilson"}


@torch.inference_mode()
def k0_census(model, instances: list[Instance], batch_size: int = 256, seed: int = 0) -> dict:
    """k = 0 for *every* planned instance: is y already the unique argmax of P(. | x0)?

    One forward per distinct x0 (the fp32 judge, last-position logits), no
    search, so even a run cut after a handful of searches gives eps(0) over the
    whole planned N; on a finished run it equals the searched eps(0) (tested).
    x0 of one length go through together: (B, |x0|) -> (B, V).
    -> {"n", "eps0", "ci95", "mean_base_loss"}
    """
    # one forward per *distinct* x0 (top-75 and uniform-rank share theirs), x0 of one length together
    x0s = sorted({tuple(x.x0_ids) for x in instances}, key=len)
    logits_of: dict[tuple, torch.Tensor] = {}
    for L in sorted({len(x) for x in x0s}):
        same = [x for x in x0s if len(x) == L]
        for i in range(0, len(same), batch_size):
            ids = torch.tensor(same[i:i + batch_size], device=model.device)
            out = model(input_ids=ids, logits_to_keep=1).logits[:, -1].float().cpu()   # (B, V)
            logits_of.update(zip(same[i:i + batch_size], out))
    req, losses = [], []
    for x in instances:
        z = logits_of[tuple(x.x0_ids)]
        others = z.clone()
        others[x.target_id] = float("-inf")
        req.append(0 if z[x.target_id] > others.max() else None)        # a tie is not a success
        losses.append(float(-torch.log_softmax(z, -1)[x.target_id]))
    return {"n": len(req), "eps0": k_epsilon_curve(req, [0])[0], "ci95": wilson_ci(req, [0])[0],
            "mean_base_loss": float(np.mean(losses)) if losses else math.nan}


def correlations(rows: list[dict]) -> dict:
    """Pearson r of required k with base loss and with base rank (solved instances)."""
    solved = [r for r in rows if r["k"] is not None]
    ks = [r["k"] for r in solved]
    return {"loss_k": pearson([r["base_loss"] for r in solved], ks),
            "rank_k": pearson([r["base_rank"] for r in solved], ks), "n_solved": len(solved)}


def speed_stats(rows: list[dict]) -> dict:
    """Seconds per back-off instance and candidates scored per second, by method."""
    secs = np.array([r["seconds"] for r in rows], dtype=float)
    out = {"backoff_median_s": float(np.median(secs)) if secs.size else math.nan,
           "backoff_p90_s": float(np.quantile(secs, 0.9)) if secs.size else math.nan}
    loads = [r["load_avg_1min"] for r in rows if r.get("load_avg_1min") is not None]
    if loads:
        out["load_avg_mean"] = float(np.mean(loads))
    # n parallel searches on one device: each instance's seconds are ~n times its solo time
    out["parallel_searches"] = max((r.get("shards", 1) for r in rows), default=1)
    methods = sorted({m for r in rows for m in r["n_candidates"]})
    for m in methods:
        n = sum(r["n_candidates"].get(m, 0) for r in rows)
        t = sum(r["seconds_by_method"].get(m, 0.0) for r in rows)
        out[f"{m}_candidates_per_s"] = n / t if t > 0 else math.nan
    evals = np.array([sum(r["n_candidates"].values()) for r in rows if r["k"] != 0], dtype=float)
    out["evals_per_searched_median"] = float(np.median(evals)) if evals.size else math.nan
    out["evals_per_searched_mean"] = float(np.mean(evals)) if evals.size else math.nan
    secs_s = np.array([r["seconds"] for r in rows if r["k"] != 0], dtype=float)
    out["seconds_per_searched_median"] = float(np.median(secs_s)) if secs_s.size else math.nan
    out["n_searched"] = int(evals.size)
    return out


def token_histogram(rows: list[dict], tokenizer, top: int = 40) -> list[tuple[str, int]]:
    """The `top` most frequent tokens in successful prompts (k >= 1): [(text, count)]."""
    counts: dict[int, int] = {}
    for r in rows:
        if r["k"]:
            for t in r["ids"]:
                counts[t] = counts.get(t, 0) + 1
    best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [(tokenizer.decode([t]), c) for t, c in best]


# Paper A's published numbers, shown *beside* ours on every figure (labelled as
# the paper's). Sources: paper A Sec. 5 / Fig. 2-4 and the authors' later GPT-2
# small run quoted in shared/DESIGN.md.
PAPER_A = {
    "gpt2_small_eps": {0: .753, 1: .634, 2: .513, 3: .418, 4: .123, 6: .038, 8: .010, 10: .0032},
    "eps10": {"Falcon-7b": .028, "Llama-7b": .014, "Falcon-40b": .030},
    "top75_reachable_k10": (0.85, 0.89),
    "uniform_reachable_k10": 0.46,
    "corr_loss_k": (0.59, 0.70),
    "corr_rank_k": (0.12, 0.21),
}


def encode_target(tokenizer, text: str) -> int:
    """A target given as text -> its single token id (one clear error otherwise)."""
    if not text:
        raise MagicTokensError("the target is empty: give the next token as text, e.g. ' Paris'")
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise MagicTokensError(f"target {text!r} is {len(ids)} tokens {ids}: reachability targets are single "
                               f"tokens; pass the first token (e.g. {tokenizer.decode(ids[:1])!r})")
    return ids[0]


def budget_label(cfg) -> str:
    """Short budget string for figure stamps, e.g. 'greedy k<=3 (all vocab) | GCG 768x128x34'."""
    if isinstance(cfg, fast.FastConfig):
        c = cfg.coordinate
        return (f"fast search: k=1 grad top-{cfg.k1_candidates} | coordinate k=2,3 x{cfg.short_steps} steps, "
                f"k={','.join(str(k) for k in cfg.ks if k > 3)} x{c.max_steps} | width {c.width}-{c.width_max}, "
                f"top-k {c.topk}, {c.objective} loss | any fp32-verified candidate stops")
    g, c = cfg.greedy, cfg.gcg
    cands = "all vocab" if g.candidates is None else f"grad top-{g.candidates}"
    return (f"greedy k<={max(cfg.greedy_ks) if cfg.greedy_ks else 0} ({cands}) | "
            f"GCG k={','.join(map(str, cfg.gcg_ks))} width x topk x steps = {c.search_width}x{c.topk}x{c.num_steps}")


def search(scale: str = "paper", out_root=None, overrides: dict | None = None, families=None,
           minutes: float | None = None, shard: tuple[int, int] | None = None) -> dict:
    """Run (or resume) the back-off searches of the reachability stage without papermill.

    For time-limited GPU calls: instances land in the same resumable logs the
    notebook reads, so `magictokens run reachability --scale paper` later only
    aggregates and plots. -> {family: (finished, total)}
    """
    import time

    from .config import stage_params
    from .data import AUTHORS_X0, data_path, read_wikitext
    from .models import load_search_pair
    from .results import results_dir

    P, cfg = stage_params(scale, "reachability", ReachabilityConfig, overrides)
    deadline = time.time() + 60 * minutes if minutes is not None else None
    torch.manual_seed(P["seed"])
    search_model, verify_model, tok = load_search_pair(P["model"], P["search_dtype"], P["verify_dtype"], P["device"])
    judge = verify_model if verify_model is not None else search_model
    fams = build_instances(cfg, tok, judge, P["seed"], read_wikitext(),
                           data_path(AUTHORS_X0) if cfg.true_token.source == "authors_csv" else None)
    unknown = set(families or []) - set(fams)
    if unknown:
        raise MagicTokensError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {sorted(unknown)}: use {sorted(fams)}")
    logs = log_dir(results_dir(scale, out_root), cfg.method)
    rows = run_families({name: fams[name] for name in families or fams}, search_model, tok, method_config(cfg), logs,
                        verify_model=verify_model, seed=P["seed"], deadline=deadline, shard=shard)
    return {name: (len(r), len(fams[name])) for name, r in rows.items()}
