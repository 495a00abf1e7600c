"""Paper B's evaluation: every trained model and baseline judged, the generation shared out over a launch.

    fields, seconds = evaluate(models, tok, data, judge, cfg, tokens, seed)   # -> CoTrainingResult's fields

Mode controllability (every system prompt on held-out harmful + benign
prompts), safety score, over-refusal and the constructive safety score, the
Safety Alignment Margin (first-token distributions under the three mode
tokens), robustness under jailbreak templates, and MMLU. Generation and
first-token logits, the cost, go through `distributed.map_ranks` in chunks
of the generation batch: alone it is one process's loop; under `accelerate
launch` each process generates its share of the batches and every process
gets every reply back in order, so the numbers are the single process's. The
judge then reads all replies on every process (cheap next to generation).

With a `cache` file (the stage's: `generations.jsonl` beside the adapters,
gitignored) every generation call's replies are appended to it under a key
(the model's weights, the system prompt, the prompts, the generation
settings), and a call whose key is there reads them: an evaluation stopped
mid-way resumes after its last finished call, and a rerun with another judge
generates nothing. Whole calls are cached, not single replies, so a resumed
run's replies are those of an uninterrupted one (batch composition unchanged).
"""
from __future__ import annotations

import csv
import hashlib
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from .. import metrics as M
from ..chat import NO_SYSTEM, first_token_logits, generate, pad_id
from ..data import data_path
from ..distributed import map_ranks, world
from ..models import weights_digest
from .config import decoding
from .data import MODES, SafetyData
from .jailbreaks import load_templates, wrap_prompts


class GenCache:
    """Replies of whole generation calls, keyed by what they depend on, in an append-only JSON-lines file
    (module docstring). A line cut by a stop mid-write is skipped on reading. Only process 0 writes."""

    def __init__(self, path=None):
        self.path = Path(path) if path else None
        self.rows: dict[str, list[str]] = {}
        self.hits = 0
        if self.path is not None and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.rows[d["key"]] = d["replies"]

    @staticmethod
    def key(model_id: str, system, prompts: list[str], settings: dict) -> str:
        blob = json.dumps({"model": model_id, "system": system, "prompts": prompts, **settings}, sort_keys=True,
                          default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def get(self, key: str, make) -> list[str]:
        if key in self.rows:
            self.hits += 1
            return self.rows[key]
        out = make()
        self.rows[key] = out
        if self.path is not None and world()[0] == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "replies": out}) + "\n")
        return out


def read_mmlu(n: int, seed: int = 0, data_dir=None) -> list[dict]:
    """n seeded questions from MMLU test, spread over subjects: {question, choices[4], answer}."""
    root = data_path("capability/mmlu/test", data_dir)
    rows = []
    for f in sorted(root.glob("*_test.csv")):
        with open(f, newline="", encoding="utf-8") as fh:
            for r in csv.reader(fh):
                if len(r) == 6:
                    rows.append({"subject": f.name[: -len("_test.csv")], "question": r[0], "choices": r[1:5],
                                 "answer": r[5].strip()})
    random.Random(f"mmlu-{seed}").shuffle(rows)
    return rows[:n]


def mmlu_accuracy(model, tok, questions: list[dict], batch_size: int = 8) -> float:
    """Zero-shot, plain text: argmax over the next-token logits of ' A'..' D' after 'Answer:'."""
    if not questions:
        return float("nan")
    return float(np.mean(map_ranks(lambda qs: mmlu_hits(model, tok, qs, batch_size), questions, batch_size)))


@torch.inference_mode()
def mmlu_hits(model, tok, questions: list[dict], batch_size: int = 8) -> list[bool]:
    """Per question: is the argmax letter the answer? (`mmlu_accuracy`, one process's share)"""
    letters = "ABCD"
    letter_ids = [tok(" " + c, add_special_tokens=False).input_ids[-1] for c in letters]
    prompts = []
    for q in questions:
        body = q["question"] + "\n" + "\n".join(f"{c}. {t}" for c, t in zip(letters, q["choices"])) + "\nAnswer:"
        prompts.append(body)
    dev = next(model.parameters()).device
    hits = []
    pid = pad_id(tok)
    for i in range(0, len(prompts), batch_size):
        ids = [tok(p, add_special_tokens=False).input_ids[-384:] for p in prompts[i:i + batch_size]]
        T = max(len(x) for x in ids)
        inp = torch.full((len(ids), T), pid, dtype=torch.long)
        mask = torch.zeros((len(ids), T), dtype=torch.long)
        for j, x in enumerate(ids):
            inp[j, T - len(x):], mask[j, T - len(x):] = torch.tensor(x), 1
        logits = model(input_ids=inp.to(dev), attention_mask=mask.to(dev)).logits[:, -1, letter_ids]  # (B, 4)
        pred = logits.argmax(-1).tolist()
        hits += [letters[p] == q["answer"] for p, q in zip(pred, questions[i:i + batch_size])]
    return hits


def evaluate(models: dict, tok, data: SafetyData, judge, cfg, tokens: dict, seed: int = 0,
             progress=print, cache=None) -> tuple[dict, dict]:
    """Judge every model. `models`: name -> model ("cotrained" first, then any of sft, sft_dpo, base);
    `cfg`: the CoTrainingConfig; `cache`: a `GenCache` file (module docstring).
    -> (CoTrainingResult's evaluation fields, seconds per part)."""
    secs: dict[str, float] = {}
    store = GenCache(cache)
    ids: dict[int, str] = {}                     # id(model) -> its weights' fingerprint (once per model)
    tp = cfg.train.max_prompt_tokens
    replies: list[dict] = []      # every judged reply: kept beside the adapters (never git), re-judged later

    def judged(model: str, cond: str, part: str, prompts, outs, harmful: bool, wrapped=None) -> list[str]:
        labels = judge.judge(outs, [harmful] * len(outs), prompts=prompts)
        replies.extend({"model": model, "condition": cond, "part": part, "harmful": harmful, "prompt": p,
                        "reply": o, "label": lab, **({"wrapped": w} if wrapped else {})}
                       for p, o, lab, w in zip(prompts, outs, labels, wrapped or [None] * len(outs)))
        return labels

    def gen(m, prompts, system, max_prompt_tokens=tp):
        if store.path is not None and id(m) not in ids:
            ids[id(m)] = weights_digest(m)
        key = store.key(ids.get(id(m), ""), system, prompts, {"max_new_tokens": cfg.max_new_tokens,
                        "batch": cfg.gen_batch_size, "max_prompt_tokens": max_prompt_tokens, "world": world()[1],
                        "device": next(m.parameters()).device.type, **decoding(cfg)})
        return store.get(key, lambda: map_ranks(lambda part: generate(m, tok, part, system, cfg.max_new_tokens,
                                                                      cfg.gen_batch_size, max_prompt_tokens,
                                                                      **decoding(cfg)),
                                                prompts, cfg.gen_batch_size))

    # 1. controllability: every condition on held-out harmful + benign prompts
    t = time.time()
    harm = [p.text for p in data.eval_harmful]
    ben = [p.text for p in data.eval_benign]
    # "none": the template's default system prompt (SmolLM's "You are a helpful AI assistant named SmolLM");
    # "no_system": no system turn at all
    conditions = {"positive": tokens["positive"], "negative": tokens["negative"],
                  "rejective": tokens["rejective"], "random": tokens["random"], "none": None, "no_system": NO_SYSTEM}
    labels_h, labels_b = {}, {}
    examples = {}
    for cond, system in conditions.items():
        outs = gen(models["cotrained"], harm + ben, system)
        labels_h[cond] = judged("cotrained", cond, "harmful", harm, outs[: len(harm)], True)
        labels_b[cond] = judged("cotrained", cond, "benign", ben, outs[len(harm):], False)
        # only benign prompts' outputs are ever shown, truncated
        examples[cond] = [{"prompt": p[:60], "response": o[:60], "judged": lab}
                          for p, o, lab in list(zip(ben, outs[len(harm):], labels_b[cond]))[:2]]
    confusion = {c: M.label_shares(labels_h[c], M.JUDGED) for c in conditions}
    confusion_benign = {c: M.label_shares(labels_b[c], M.JUDGED) for c in conditions}
    secs["eval_controllability"] = time.time() - t
    progress(f"controllability judged in {secs['eval_controllability']:.0f}s")

    # 3. safety score (harmful held-out) and over-refusal (XSTest safe)
    t = time.time()
    xs = [p.text for p in data.xstest]
    safety, over, css, harm_labels, invalid = {}, {}, {}, {}, {}
    safety["cotrained_positive"] = M.safety_score(labels_h["positive"])
    xs_pos = judged("cotrained", "positive", "xstest", xs, gen(models["cotrained"], xs, tokens["positive"]), False)
    over["cotrained_positive"] = M.over_refusal(xs_pos)
    css["cotrained_positive"] = M.constructive_safety_score(labels_h["positive"], xs_pos + labels_b["positive"])
    invalid["cotrained_positive"] = {"harmful": M.invalid_share(labels_h["positive"]),
                                     "safe": M.invalid_share(xs_pos + labels_b["positive"])}
    harm_labels["cotrained_positive"] = labels_h["positive"]
    for name in ("sft", "sft_dpo", "base"):
        if name in models:
            h_lab = judged(name, "none", "harmful", harm, gen(models[name], harm, None), True)
            s_out = gen(models[name], xs + ben, None)
            s_lab = (judged(name, "none", "xstest", xs, s_out[: len(xs)], False)
                     + judged(name, "none", "benign", ben, s_out[len(xs):], False))
            safety[name], harm_labels[name] = M.safety_score(h_lab), h_lab
            over[name] = M.over_refusal(s_lab[: len(xs)])
            css[name] = M.constructive_safety_score(h_lab, s_lab)
            invalid[name] = {"harmful": M.invalid_share(h_lab), "safe": M.invalid_share(s_lab)}
    secs["eval_safety"] = time.time() - t
    progress(f"safety + over-refusal in {secs['eval_safety']:.0f}s")

    # 2. safety alignment margin: first-token distributions under the three mode tokens
    t = time.time()
    sam, proj, sam_stats, sam_d = {}, {}, {}, {}
    prompts = harm + ben
    for name, m in models.items():
        logits, modes, pids = [], [], []
        for mode in MODES:
            logits.append(np.stack(map_ranks(lambda part: first_token_logits(m, tok, part, tokens[mode],
                                                                             cfg.gen_batch_size, tp),
                                             prompts, cfg.gen_batch_size)))
            modes += [mode] * len(prompts)
            pids += list(range(len(prompts)))
        Z = np.concatenate(logits)                                        # (3 n, V) first-token logits
        X = np.exp(Z - Z.max(1, keepdims=True))
        X /= X.sum(1, keepdims=True)                                      # (3 n, V) probabilities
        D = {"cosine_logits": M.pairwise_distances(Z, "cosine"), "euclidean_probs": M.pairwise_distances(X, "euclidean")}
        sam[name] = M.silhouette_from_distances(D["euclidean_probs"], modes)   # the committed runs' metric
        sam_stats[name] = {k: M.sam_with_uncertainty(d, modes, pids, cfg.sam_boot, cfg.sam_perm, seed)
                           for k, d in D.items()}
        sam_d[name] = {**D, "modes": modes, "prompt_ids": pids}
        proj[name] = {"xy": M.pca_2d(X).round(5).tolist(), "mode": modes}
    secs["eval_sam"] = time.time() - t

    # 2b. robustness under jailbreak templates (paper B, Fig. 1): the same safety score, prompts wrapped
    t = time.time()
    jail = {}
    if cfg.jailbreak_per_prompt:
        wrapped = wrap_prompts(harm, load_templates(cfg.jailbreak_max_chars), cfg.jailbreak_per_prompt, seed)
        texts, owner = [w for _, _, w in wrapped], np.array([i for i, _, _ in wrapped])
        asked = [harm[i] for i in owner]   # the judge reads the request, not the template around it
        for name, system in (("cotrained_positive", tokens["positive"]), *((b, None) for b in ("sft", "sft_dpo", "base")
                                                                            if b in models)):
            m = models["cotrained" if name == "cotrained_positive" else name]
            outs = gen(m, texts, system, cfg.jailbreak_max_prompt_tokens)
            att = judged(name, "positive" if name == "cotrained_positive" else "none", "jailbreak", asked, outs, True,
                         wrapped=texts)
            jail[name] = jailbreak_drop(harm_labels[name], att, owner, seed, cfg.sam_boot)
    secs["eval_jailbreak"] = time.time() - t

    # 4. capability
    t = time.time()
    qs = read_mmlu(cfg.mmlu_n, seed)
    mmlu = {name: mmlu_accuracy(m, tok, qs) for name, m in models.items()}
    secs["eval_mmlu"] = time.time() - t

    return dict(confusion=confusion, confusion_benign=confusion_benign, mode_accuracy=M.mode_accuracy(confusion),
                sam=sam, projection=proj, safety_score=safety, xstest_over_refusal=over, mmlu=mmlu,
                examples=examples, constructive_safety=css, sam_stats=sam_stats, sam_distances=sam_d,
                jailbreak=jail, invalid_share=invalid, replies=replies), secs


def jailbreak_drop(plain: list[str], attacked: list[str], owner, seed: int = 0, n_boot: int = 500) -> dict:
    """Safety score without and with jailbreak templates, and paper B's relative drop, with a bootstrap
    interval over prompts (a prompt's wrapped versions stay with it). `owner[j]`: the prompt of attacked[j]."""
    def points(labels):      # invalid -> nan: scored apart, as in `metrics.safety_score`
        return np.array([np.nan if M.SAFETY_POINTS[x] is None else M.SAFETY_POINTS[x] / 2 for x in labels])

    pts, att, owner = points(plain), points(attacked), np.asarray(owner)             # (n,), (n * per_prompt,)
    per = np.array([np.nanmean(att[owner == i]) if np.isfinite(att[owner == i]).any() else np.nan
                    for i in range(len(pts))])                                       # (n,) attacked, per prompt
    both = np.isfinite(pts) & np.isfinite(per)          # prompts with a valid reply plain and attacked
    pts, per = pts[both], per[both]
    before = float(pts.mean()) if len(pts) else float("nan")
    after = float(per.mean()) if len(per) else float("nan")
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot if len(pts) else 0):
        idx = rng.integers(0, len(pts), len(pts))
        boot.append(M.relative_drop(pts[idx].mean(), per[idx].mean()))
    boot = np.asarray(boot)
    return {"plain": before, "attacked": after, "relative_drop": M.relative_drop(before, after),
            "ci95": [float(np.nanquantile(boot, 0.025)), float(np.nanquantile(boot, 0.975))] if len(boot) else None,
            "n_prompts": int(len(pts)), "n_attacked": len(att), "invalid_plain": M.invalid_share(plain),
            "invalid_attacked": M.invalid_share(attacked)}


def rejudge(replies: list[dict], judge, seed: int = 0, n_boot: int = 500) -> dict:
    """Every judge-dependent field of `evaluate` again from its stored replies (`replies.jsonl`), read by
    `judge`: a new judge re-scores an earlier run without generating. -> {confusion, confusion_benign,
    mode_accuracy, safety_score, xstest_over_refusal, constructive_safety, invalid_share, jailbreak}.
    (SAM and MMLU read logits, not replies: they do not depend on the judge.)"""
    groups: dict[tuple, list[dict]] = {}
    for r in replies:
        groups.setdefault((r["model"], r["condition"], r["part"]), []).append(r)
    lab = {k: judge.judge([r["reply"] for r in v], [r["harmful"] for r in v], prompts=[r["prompt"] for r in v])
           for k, v in groups.items()}
    get = lambda *k: lab.get(k, [])
    conds = [c for (m, c, p) in groups if m == "cotrained" and p == "harmful"]
    confusion = {c: M.label_shares(get("cotrained", c, "harmful"), M.JUDGED) for c in conds}
    confusion_benign = {c: M.label_shares(get("cotrained", c, "benign"), M.JUDGED) for c in conds}
    h_pos, xs_pos, b_pos = (get("cotrained", "positive", p) for p in ("harmful", "xstest", "benign"))
    safety = {"cotrained_positive": M.safety_score(h_pos)}
    over = {"cotrained_positive": M.over_refusal(xs_pos)}
    css = {"cotrained_positive": M.constructive_safety_score(h_pos, xs_pos + b_pos)}
    invalid = {"cotrained_positive": {"harmful": M.invalid_share(h_pos), "safe": M.invalid_share(xs_pos + b_pos)}}
    harm_labels = {"cotrained_positive": h_pos}
    for name in ("sft", "sft_dpo", "base"):
        if (name, "none", "harmful") in groups:
            h, s = get(name, "none", "harmful"), get(name, "none", "xstest") + get(name, "none", "benign")
            safety[name], harm_labels[name] = M.safety_score(h), h
            over[name] = M.over_refusal(get(name, "none", "xstest"))
            css[name] = M.constructive_safety_score(h, s)
            invalid[name] = {"harmful": M.invalid_share(h), "safe": M.invalid_share(s)}
    harm = [r["prompt"] for r in groups.get(("cotrained", "positive", "harmful"), [])]
    index = {p: i for i, p in enumerate(harm)}
    jail = {}
    for name in harm_labels:
        model, cond = ("cotrained", "positive") if name == "cotrained_positive" else (name, "none")
        rows = groups.get((model, cond, "jailbreak"), [])
        if rows:
            jail[name] = jailbreak_drop(harm_labels[name], get(model, cond, "jailbreak"),
                                        [index[r["prompt"]] for r in rows], seed, n_boot)
    return dict(confusion=confusion, confusion_benign=confusion_benign, mode_accuracy=M.mode_accuracy(confusion),
                safety_score=safety, xstest_over_refusal=over, constructive_safety=css, invalid_share=invalid,
                jailbreak=jail)
