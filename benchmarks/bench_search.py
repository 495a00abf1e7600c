"""Search-speed benchmark on whatever device runs it (not a timed test).

    python benchmarks/bench_search.py                 # default model, auto device
    python benchmarks/bench_search.py --model gpt2 --n-instances 10 --gcg-width 768
    python benchmarks/bench_search.py --scoring-only --int8     # throughput, peak ratio, int8 (minutes on a CPU)

Reports, in one run so the ratios are like for like:
  * candidates scored per second: search dtype vs fp32, batched vs one at a
    time, logits at the last position only vs at every position;
  * greedy back-generation candidates/s (a full-vocabulary step, or --greedy-n);
  * GCG: seconds per step and candidates/s at the paper's width (768);
  * back-off seconds per instance (median, p90) on true-token Wikitext x0;
  * achieved GFLOP/s per scored candidate (hardware.forward_flops) and its
    ratio to this CPU's peak for the dtype used (cores x clock x FLOP/cycle of
    the detected vector unit: hardware.peak_gflops), so any machine's run
    says how close to its limit it scores;
  * --int8: an int8 dynamic-quantised copy of the search model (fp32
    verification unchanged) scored like for like;
  * peak memory; and the CPU slowdown from requires_grad=False (--check-grad-flag).
Writes results/bench/<device>.json.  `--scoring-only` stops after the throughput figures.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from magictokens import reachability as R
from magictokens.controllers import backoff, gcg, greedy
from magictokens.data import read_wikitext
from magictokens.hardware import cpu_slug, dtype_name, forward_flops, hardware_meta, peak_gflops
from magictokens.models import DEFAULT_MODEL, load_search_pair
from magictokens.results import REPO_ROOT, device_name, versions, write_json
from magictokens.scoring import Scorer


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def rate(fn, n: int, dev, repeat: int = 2) -> float:
    """Candidates per second of fn() scoring n candidates (best of `repeat`, after a warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        sync(dev)
        t = time.perf_counter()
        fn()
        sync(dev)
        best = min(best, time.perf_counter() - t)
    return n / best


def peak_gb(dev) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--search-dtype", default="auto")   # bf16 where native, else fp32 (hardware.py)
    ap.add_argument("--x0-len", type=int, default=16)
    ap.add_argument("--batch", type=int, default=None, help="candidates per forward (default 256 CPU / 8192 GPU)")
    ap.add_argument("--n", type=int, default=None, help="candidates per throughput probe")
    ap.add_argument("--greedy-n", type=int, default=None, help="greedy candidates (default: whole vocab on GPU, 512 on CPU)")
    ap.add_argument("--gcg-width", type=int, default=768)
    ap.add_argument("--gcg-steps", type=int, default=3)
    ap.add_argument("--n-instances", type=int, default=6)
    ap.add_argument("--check-grad-flag", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--int8", action="store_true", help="also score with an int8 dynamic-quantised search model (CPU)")
    ap.add_argument("--scoring-only", action="store_true", help="stop after the throughput and peak figures")
    a = ap.parse_args()

    search, verify, tok = load_search_pair(a.model, a.search_dtype, "float32", a.device)
    fp32 = verify if verify is not None else search
    dev = fp32.device
    gpu = dev.type == "cuda"
    batch = a.batch or (8192 if gpu else 256)
    n = a.n or (4 * batch if gpu else 512)
    text = read_wikitext()
    inst = R.sample_wikitext_instances(tok, text, [a.x0_len], max(1, a.n_instances), seed=0)
    x0, y = inst[0].x0_ids, inst[0].target_id
    V = fp32.get_input_embeddings().weight.shape[0]
    cands = torch.randint(100, V - 100, (n, 1), generator=torch.Generator().manual_seed(0))
    search_dt = next(search.parameters()).dtype
    out = {"device": device_name(dev), "model": a.model, "x0_len": a.x0_len, "batch": batch,
           "search_dtype": dtype_name(search_dt), "versions": versions()}

    # -- scoring throughput, like for like
    s_search = Scorer(search, x0, y, batch_size=batch)
    s_fp32 = Scorer(fp32, x0, y, batch_size=batch)
    out["score_per_s_search_dtype"] = rate(lambda: s_search.score(cands), n, dev)
    out["score_per_s_fp32"] = rate(lambda: s_fp32.score(cands), n, dev)
    few = cands[: min(n, 64)]
    one = Scorer(search, x0, y, batch_size=1)
    out["score_per_s_one_at_a_time"] = rate(lambda: one.score(few), len(few), dev, repeat=1)

    # -- how close to the machine's limit: achieved GFLOP/s vs cores x clock x FLOP/cycle of the vector unit
    flops = forward_flops(fp32, len(x0) + 1)                    # u (k = 1) + x0, last-position logits
    threads = torch.get_num_threads()
    out["flops_per_candidate"] = flops
    out["threads"] = threads
    out["hardware"] = hardware_meta(dev)
    out["gflops"] = {}
    for key, dt in (("search_dtype", search_dt), ("fp32", torch.float32)):
        achieved = out[f"score_per_s_{key}"] * flops / 1e9
        peak = None if gpu else peak_gflops(dt, threads)
        out["gflops"][key] = {"dtype": dtype_name(dt), "achieved": achieved, "peak": peak,
                              "ratio_to_peak": achieved / peak if peak else None}

    # -- int8 dynamic quantisation of the search model (linear layers; verification stays fp32)
    if not gpu and a.int8:
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
        s_q = Scorer(q, x0, y, batch_size=batch)
        out["score_per_s_int8_dynamic"] = rate(lambda: s_q.score(cands), n, dev)
        agree = s_q.score(cands[:256]).loss.argsort()[:8].tolist() == s_fp32.score(cands[:256]).loss.argsort()[:8].tolist()
        out["int8_top8_order_matches_fp32"] = agree
        del q, s_q

    # what a naive implementation does: logits at every position. Its (B, T, V) fp32
    # logits need B*T*V*4 bytes (42 GB at B=8192, T=26): chunks of at most 1024 here.
    naive = cands[: min(n, 4096)]

    def all_positions():
        with torch.inference_mode():
            for c in naive.split(min(batch, 1024)):
                ids = s_search.sequences(c, True)
                search(input_ids=ids).logits.float().log_softmax(-1)
    out["score_per_s_all_position_logits"] = rate(all_positions, len(naive), dev, repeat=1)

    if a.scoring_only:
        return finish(out, a, gpu)

    # -- greedy step
    gn = a.greedy_n or (None if gpu else 512)
    gcfg = greedy.GreedyConfig(k_max=1, candidates=gn, batch_size=batch, stop_on_success=False)
    t = time.perf_counter()
    g = greedy.run(search, tok, x0, y, gcfg, verify_model=verify)
    out["greedy_candidates_per_s"] = g.n_candidates / (time.perf_counter() - t)
    out["greedy_step_s"] = time.perf_counter() - t
    out["greedy_step_candidates"] = g.n_candidates

    # -- GCG steps at the paper's width
    ccfg = gcg.GCGConfig(num_steps=a.gcg_steps, search_width=a.gcg_width, batch_size=min(batch, a.gcg_width),
                         early_stop=False)
    r = gcg.run(search, tok, x0, y, 10, ccfg, verify_model=verify)
    out["gcg_step_s"] = r.seconds / max(1, r.steps)
    out["gcg_candidates_per_s"] = r.n_candidates / r.seconds

    # -- back-off instances at the default (CPU) or paper (GPU) budget
    from magictokens.config import build, load_params

    P = load_params("paper" if gpu else "default")
    bcfg = build(R.ReachabilityConfig, P["reachability"], "reachability").backoff
    secs = []
    for x in inst[: a.n_instances]:
        res = backoff.run(search, tok, x.x0_ids, x.target_id, bcfg, verify_model=verify)
        secs.append(res.seconds)
    out["backoff_budget"] = "paper" if gpu else "default"
    out["backoff_median_s"] = float(np.median(secs)) if secs else None
    out["backoff_p90_s"] = float(np.quantile(secs, 0.9)) if secs else None
    out["peak_mem_gb"] = peak_gb(dev)

    if a.check_grad_flag and not gpu:
        frozen = copy.deepcopy(search).requires_grad_(False)
        sf = Scorer(frozen, x0, y, batch_size=batch)
        out["score_per_s_requires_grad_false"] = rate(lambda: sf.score(cands[:batch]), batch, dev, repeat=1)

    return finish(out, a, gpu)


def finish(out: dict, a, gpu: bool) -> dict:
    """Ratios of the throughputs measured in this run; written to results/bench/<cpu|gpu>.json."""
    ratios = out.setdefault("ratios", {})
    ratios["search_dtype_vs_fp32"] = out["score_per_s_search_dtype"] / out["score_per_s_fp32"]
    ratios["batched_vs_one_at_a_time"] = out["score_per_s_search_dtype"] / out["score_per_s_one_at_a_time"]
    if "score_per_s_all_position_logits" in out:
        ratios["last_position_vs_all_positions"] = out["score_per_s_search_dtype"] / out["score_per_s_all_position_logits"]
    if "score_per_s_int8_dynamic" in out:
        ratios["int8_dynamic_vs_search_dtype"] = out["score_per_s_int8_dynamic"] / out["score_per_s_search_dtype"]
    if "score_per_s_requires_grad_false" in out:
        ratios["requires_grad_true_vs_false"] = out["score_per_s_search_dtype"] / out["score_per_s_requires_grad_false"]
    g = out["gflops"]["search_dtype"]
    if g["peak"]:
        print(f"scoring at {g['achieved']:.1f} GFLOP/s in {g['dtype']} = {g['ratio_to_peak']:.0%} of this CPU's "
              f"{g['peak']:.0f} GFLOP/s peak ({out['threads']} threads, {out['hardware']['cpu']['isa']})")
    tag = "gpu" if gpu else f"cpu_{cpu_slug()}"   # one file per CPU kind (results/bench/cpu.json: the first machine's)
    path = Path(a.out) if a.out else REPO_ROOT / "results" / "bench" / f"{tag}.json"
    write_json(path, out)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
