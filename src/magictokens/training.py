"""Magic-token co-training (paper B) and its baselines, at any scale.

One SFT stage teaches three behaviours at once, each keyed by a magic token in
the system prompt; the loss is on response tokens only (every prompt token,
system token included, is masked with -100). Baselines on the same data and
optimizer-step budget: single-mode SFT (positive targets, no magic token),
SFT followed by DPO (positive preferred over negative on harmful prompts,
helpful over refusal on benign ones), and the untouched base model.

    result = run(model, tok, data, tokens, judge, cfg)      # -> CoTrainingResult

LoRA (peft, all linear layers) is the default; ``lora: false`` fine-tunes
every weight. CPU speed (torch 2.13, 2 cores): parameters with
``requires_grad=False`` slow bf16 forwards ~10x, so trained models are merged
back to plain modules with gradients left on, and generation/eval run under
``torch.inference_mode`` in the model's own dtype.
"""
from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import MagicTokensError
from .safety_data import MODE_INSTRUCTIONS, MODES, SafetyData, mode_examples, require_mode

IGNORE = -100


# ----------------------------------------------------------------------------- configs


@dataclass
class TrainConfig:
    """One SFT run (co-training or the single-mode baseline)."""

    lora: bool = True               # false: full fine-tuning
    lora_r: int = 8
    lora_alpha: int = 16
    lr: float = 3e-4
    epochs: int = 1
    batch_size: int = 8
    max_prompt_tokens: int = 96     # longer prompts are cut from the left (the template end stays)
    max_response_tokens: int = 64
    bf16_autocast: bool = True      # CPU with AVX512-BF16 / GPU: faster; master weights stay fp32
    weight_decay: float = 0.0
    log_every: int = 10


@dataclass
class DPOConfig:
    beta: float = 0.1
    lr: float = 1e-4
    epochs: int = 1


@dataclass
class CoTrainingConfig:
    """params.yaml `cotraining:` section."""

    n_train_harmful: int = 30
    n_train_benign: int = 15
    n_eval_harmful: int = 24
    n_eval_benign: int = 12
    n_xstest: int = 16
    max_prompt_chars: int = 400
    magic_tokens: dict | None = None   # null: generated from the seed (recorded in the json)
    magic_token_length: int = 8
    untokened_positive_share: float = 0.0  # share of positive rows also trained with no system prompt
    train: TrainConfig = field(default_factory=TrainConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    distil_max_new_tokens: int = 48
    max_new_tokens: int = 32        # judged generations
    gen_batch_size: int = 16
    mmlu_n: int = 40
    judge_n_alpaca: int = 300
    judge_n_xstest: int | None = None   # cap on XSTest completions per side (smoke)
    judge_max_length: int = 64
    baselines: list = field(default_factory=lambda: ["sft", "sft_dpo", "base"])


# ----------------------------------------------------------------------------- formatting


def chat_text(tok, user: str, system: str | None) -> str:
    """The conversation text up to the start of the assistant reply.

    Chat models: the tokenizer's chat template (system role = the magic token;
    None = no system message, i.e. the template's default). Tokenizers with no
    template (the tiny test model): a plain-text fallback ``{system}\nUser: ..\nAssistant:``.
    """
    if getattr(tok, "chat_template", None):
        msgs = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": user}]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return (f"{system}\n" if system is not None else "") + f"User: {user}\nAssistant:"


def prompt_ids(tok, user: str, system: str | None, max_tokens: int | None = None) -> list[int]:
    """Token ids of `chat_text` (a BOS first for template-less tokenizers)."""
    def render(u: str) -> list[int]:
        ids = tok(chat_text(tok, u, system), add_special_tokens=False).input_ids
        if not getattr(tok, "chat_template", None) and tok.bos_token_id is not None:
            ids = [tok.bos_token_id] + ids
        return ids

    ids = render(user)
    if max_tokens and len(ids) > max_tokens:
        # cut the *user text* (keeping its start), never the magic token or the template
        u_ids = tok(user, add_special_tokens=False).input_ids
        keep = max(1, len(u_ids) - (len(ids) - max_tokens))
        ids = render(tok.decode(u_ids[:keep]))
        if len(ids) > max_tokens:  # a template longer than the budget: last resort
            ids = ids[-max_tokens:]
    return ids


def end_of_turn_id(tok) -> int:
    if tok.eos_token_id is None:
        raise MagicTokensError("the tokenizer has no eos token: set one (the end of a response)")
    return tok.eos_token_id


def encode_example(tok, user: str, response: str, system: str | None, cfg: TrainConfig) -> tuple[list[int], list[int]]:
    """-> (input_ids, labels); labels are IGNORE on every prompt token (response-only loss)."""
    p = prompt_ids(tok, user, system, cfg.max_prompt_tokens)
    lead = "" if getattr(tok, "chat_template", None) else " "
    r = tok(lead + response, add_special_tokens=False).input_ids[: cfg.max_response_tokens - 1] + [end_of_turn_id(tok)]
    return p + r, [IGNORE] * len(p) + r


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """Right-pad a batch: input_ids, attention_mask, labels (pads are IGNORE)."""
    T = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else end_of_turn_id(tok)


def response_logprob(model, batch: dict) -> torch.Tensor:
    """Sum of log p(response token) per sequence. (B, T) -> (B,)"""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]                                           # (B, T-1)
    mask = labels != IGNORE
    lp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (lp * mask).sum(-1)


def response_loss(model, batch: dict) -> torch.Tensor:
    """Mean cross-entropy over response tokens only."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                           ignore_index=IGNORE)


def dpo_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """DPO (Rafailov et al. 2023): -log sigmoid(beta [(pi_c - ref_c) - (pi_r - ref_r)]), batch mean.

    Inputs are summed response log-probabilities, shape (B,).
    """
    margin = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


# ----------------------------------------------------------------------------- training


@dataclass
class TrainLog:
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    losses: list = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def _attach(model, cfg: TrainConfig, seed: int):
    """LoRA on all linear layers (peft) or every weight trainable. -> (model, params)"""
    torch.manual_seed(seed)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
        return model, [p for p in model.parameters() if p.requires_grad]
    for p in model.parameters():
        p.requires_grad_(True)
    return model, list(model.parameters())


def _detach(model, cfg: TrainConfig, save_dir: str | Path | None):
    """Save (adapter or weights) and return a plain model with gradients on (CPU bf16 speed)."""
    if save_dir is not None:
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        if cfg.lora:
            model.save_pretrained(save_dir)
        else:
            from safetensors.torch import save_model

            save_model(model, str(save_dir / "model.safetensors"))
    if cfg.lora:
        model = model.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def _autocast(model, enabled: bool):
    dev = next(model.parameters()).device.type
    return torch.autocast(dev, dtype=torch.bfloat16, enabled=enabled)


def sft(model, tok, rows: list[dict], cfg: TrainConfig, seed: int = 0, steps: int | None = None,
        save_dir=None):
    """Supervised fine-tuning on rows {prompt, response, system}; returns (trained model, TrainLog).

    `steps` fixes the optimizer-step budget (the data is cycled, reshuffled each
    pass); default: cfg.epochs passes. The input model is not modified.
    """
    if not rows:
        raise MagicTokensError("sft: no training rows")
    model = copy.deepcopy(model)
    model, params = _attach(model, cfg, seed)
    enc = [encode_example(tok, r["prompt"], r["response"], r.get("system"), cfg) for r in rows]
    per_epoch = math.ceil(len(enc) / cfg.batch_size)
    steps = steps or cfg.epochs * per_epoch
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)))
    rng, order, log = random.Random(seed), [], TrainLog()
    model.train()
    t0 = time.time()
    dev = next(model.parameters()).device
    for step in range(steps):
        if len(order) < cfg.batch_size:
            perm = list(range(len(enc)))
            rng.shuffle(perm)
            order += perm
        idx, order = order[: cfg.batch_size], order[cfg.batch_size:]
        batch = {k: v.to(dev) for k, v in collate([enc[i] for i in idx], pad_id(tok)).items()}
        with _autocast(model, cfg.bf16_autocast):
            loss = response_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        log.steps += 1
        log.tokens += int(batch["attention_mask"].sum())
        log.losses.append(float(loss.detach()))
    log.seconds = time.time() - t0
    return _detach(model, cfg, save_dir), log


def dpo(model, tok, pairs: list[dict], cfg: TrainConfig, dcfg: DPOConfig, seed: int = 0, save_dir=None):
    """DPO from `model` (also the frozen reference) on pairs {prompt, chosen, rejected, system}."""
    if not pairs:
        raise MagicTokensError("dpo: no preference pairs")
    dev = next(model.parameters()).device
    ch = [encode_example(tok, p["prompt"], p["chosen"], p.get("system"), cfg) for p in pairs]
    rj = [encode_example(tok, p["prompt"], p["rejected"], p.get("system"), cfg) for p in pairs]
    bs = max(1, cfg.batch_size // 2)  # chosen + rejected share one forward
    batches = [list(range(i, min(i + bs, len(pairs)))) for i in range(0, len(pairs), bs)]

    def both(m, idx):
        b = {k: v.to(dev) for k, v in collate([ch[i] for i in idx] + [rj[i] for i in idx], pad_id(tok)).items()}
        lp = response_logprob(m, b)
        return lp[: len(idx)], lp[len(idx):], int(b["attention_mask"].sum())

    ref = {}
    with torch.inference_mode(), _autocast(model, cfg.bf16_autocast):
        for j, idx in enumerate(batches):
            c, r, _ = both(model, idx)
            ref[j] = (c.float().clone(), r.float().clone())
    policy = copy.deepcopy(model)
    policy, params = _attach(policy, cfg, seed)
    opt = torch.optim.AdamW(params, lr=dcfg.lr)
    rng, log = random.Random(seed), TrainLog()
    policy.train()
    t0 = time.time()
    for _ in range(dcfg.epochs):
        order = list(range(len(batches)))
        rng.shuffle(order)
        for j in order:
            with _autocast(policy, cfg.bf16_autocast):
                c, r, ntok = both(policy, batches[j])
                loss = dpo_loss(c.float(), r.float(), *ref[j], beta=dcfg.beta)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step(); opt.zero_grad(set_to_none=True)
            log.steps += 1
            log.tokens += ntok
            log.losses.append(float(loss.detach()))
    log.seconds = time.time() - t0
    return _detach(policy, cfg, save_dir), log


# ----------------------------------------------------------------------------- generation / eval


def left_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists so the last position is every row's next-token slot. -> (ids, mask), (B, T)"""
    T = max(len(x) for x in seqs)
    inp = torch.full((len(seqs), T), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for j, x in enumerate(seqs):
        inp[j, T - len(x):], mask[j, T - len(x):] = torch.tensor(x), 1
    return inp, mask


@torch.inference_mode()
def generate_from_ids(model, tok, seqs: list[list[int]], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy continuations of raw id sequences (left-padded batches), decoded without special tokens."""
    dev = next(model.parameters()).device
    eos, pid = end_of_turn_id(tok), pad_id(tok)
    out: list[str] = []
    for i in range(0, len(seqs), batch_size):
        inp, mask = left_pad(seqs[i:i + batch_size], pid)
        gen = model.generate(input_ids=inp.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=eos, pad_token_id=pid)
        out += [tok.decode(g[inp.shape[1]:], skip_special_tokens=True).strip() for g in gen]
    return out


def generate(model, tok, prompts: list[str], system: str | None, max_new_tokens: int,
             batch_size: int = 16, max_prompt_tokens: int | None = None) -> list[str]:
    """Greedy responses to chat prompts under one system prompt."""
    seqs = [prompt_ids(tok, p, system, max_prompt_tokens) for p in prompts]
    return generate_from_ids(model, tok, seqs, max_new_tokens, batch_size)


@torch.inference_mode()
def first_token_distributions(model, tok, prompts: list[str], system: str | None, batch_size: int = 16,
                              max_prompt_tokens: int | None = None) -> np.ndarray:
    """P(first response token | prompt, system) for each prompt. -> (N, V) float32"""
    dev = next(model.parameters()).device
    rows = []
    pid = pad_id(tok)
    for i in range(0, len(prompts), batch_size):
        inp, mask = left_pad([prompt_ids(tok, p, system, max_prompt_tokens) for p in prompts[i:i + batch_size]], pid)
        logits = model(input_ids=inp.to(dev), attention_mask=mask.to(dev)).logits[:, -1]   # (B, V)
        rows.append(torch.softmax(logits.float(), -1).cpu().numpy())
    return np.concatenate(rows)


def self_distil(model, tok, data: SafetyData, max_new_tokens: int, batch_size: int = 16,
                max_prompt_tokens: int | None = None) -> int:
    """Fill every missing target (None) with the base model's greedy answer under the
    mode's instruction as system prompt (paper B's self-distillation). -> number filled."""
    n = 0
    for mode in MODES:
        todo = [p for p in data.train if p.responses.get(mode) is None]
        if not todo:
            continue
        outs = generate(model, tok, [p.text for p in todo], MODE_INSTRUCTIONS[mode], max_new_tokens,
                        batch_size, max_prompt_tokens)
        for p, o in zip(todo, outs):
            p.responses[mode], p.origin[mode] = o or "Sure.", "distil"
            n += 1
    return n


def cotraining_rows(data: SafetyData, tokens: dict, untokened_positive_share: float = 0.0,
                    seed: int = 0) -> list[dict]:
    """All three modes, each with its magic token as the system prompt."""
    rows = [{**r, "system": tokens[r["mode"]]} for r in mode_examples(data, MODES)]
    if untokened_positive_share > 0:
        rng = random.Random(seed)
        pos = [r for r in rows if r["mode"] == "positive"]
        rows += [{**r, "system": None} for r in rng.sample(pos, int(round(untokened_positive_share * len(pos))))]
    return rows


def sft_rows(data: SafetyData) -> list[dict]:
    """Single-mode baseline: positive targets, no system prompt."""
    return [{**r, "system": None} for r in mode_examples(data, ("positive",))]


def dpo_pairs(data: SafetyData) -> list[dict]:
    """Positive preferred over negative on harmful prompts; over a refusal on benign ones."""
    out = []
    for p in data.train:
        rejected = p.responses["negative"] if p.harmful else p.responses["rejective"]
        out.append({"prompt": p.text, "chosen": p.responses["positive"], "rejected": rejected, "system": None})
    return out


# ----------------------------------------------------------------------------- MMLU


def read_mmlu(n: int, seed: int = 0, data_dir=None) -> list[dict]:
    """n seeded questions from MMLU test, spread over subjects: {question, choices[4], answer}."""
    import csv

    from .data import data_path

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


@torch.inference_mode()
def mmlu_accuracy(model, tok, questions: list[dict], batch_size: int = 8) -> float:
    """Zero-shot, plain text: argmax over the next-token logits of ' A'..' D' after 'Answer:'."""
    if not questions:
        return float("nan")
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
    return float(np.mean(hits))


# ----------------------------------------------------------------------------- the whole experiment


@dataclass
class CoTrainingResult:
    """Everything the notebook plots and the json records (judged labels, no texts)."""

    tokens: dict
    confusion: dict              # harmful held-out prompts: condition -> {label: share}
    confusion_benign: dict       # benign held-out prompts
    mode_accuracy: float
    sam: dict                    # model -> silhouette
    projection: dict             # model -> {"xy": [[x, y], ...], "mode": [...]}
    safety_score: dict
    xstest_over_refusal: dict
    mmlu: dict
    train_logs: dict
    n_distilled: int
    examples: dict               # truncated benign examples only
    seconds: dict


def run(model, tok, data: SafetyData, judge, cfg: CoTrainingConfig, tokens: dict, seed: int = 0,
        save_dir=None, progress=print) -> CoTrainingResult:
    """Self-distil missing targets, co-train, train the baselines, evaluate all. See the module docstring."""
    from . import metrics as M

    for k in (*MODES, "random"):
        if k not in tokens:
            raise MagicTokensError(f"magic tokens lack {k!r}: give positive, negative, rejective and random")
    unknown = [b for b in cfg.baselines if b not in ("sft", "sft_dpo", "base")]
    if unknown:
        raise MagicTokensError(f"unknown baseline(s) {unknown}: use sft, sft_dpo, base")
    secs: dict[str, float] = {}
    tp = cfg.train.max_prompt_tokens
    gen = lambda m, prompts, system: generate(m, tok, prompts, system, cfg.max_new_tokens, cfg.gen_batch_size, tp)

    t = time.time()
    n_distilled = self_distil(model, tok, data, cfg.distil_max_new_tokens, cfg.gen_batch_size, tp)
    secs["self_distil"] = time.time() - t
    progress(f"self-distilled {n_distilled} targets in {secs['self_distil']:.0f}s")

    save = (lambda name: Path(save_dir) / name) if save_dir else (lambda name: None)
    rows = cotraining_rows(data, tokens, cfg.untokened_positive_share, seed)
    per_epoch = math.ceil(len(rows) / cfg.train.batch_size)
    budget = cfg.train.epochs * per_epoch          # optimizer steps every SFT run gets
    t = time.time()
    models, logs = {}, {}
    models["cotrained"], logs["cotrained"] = sft(model, tok, rows, cfg.train, seed, budget, save("cotrained"))
    secs["train_cotrained"] = time.time() - t
    progress(f"co-trained: {budget} steps, {logs['cotrained'].tokens_per_s:.0f} tok/s, "
             f"loss {logs['cotrained'].losses[0]:.2f} -> {logs['cotrained'].losses[-1]:.2f}")
    if "sft" in cfg.baselines or "sft_dpo" in cfg.baselines:
        t = time.time()
        models["sft"], logs["sft"] = sft(model, tok, sft_rows(data), cfg.train, seed, budget, save("sft"))
        secs["train_sft"] = time.time() - t
        progress(f"sft: {budget} steps, loss {logs['sft'].losses[0]:.2f} -> {logs['sft'].losses[-1]:.2f}")
    if "sft_dpo" in cfg.baselines:
        t = time.time()
        models["sft_dpo"], logs["sft_dpo"] = dpo(models["sft"], tok, dpo_pairs(data), cfg.train, cfg.dpo, seed,
                                                 save("sft_dpo"))
        secs["train_dpo"] = time.time() - t
        progress(f"dpo: {logs['sft_dpo'].steps} steps, loss {logs['sft_dpo'].losses[0]:.3f} -> {logs['sft_dpo'].losses[-1]:.3f}")
    if "base" in cfg.baselines:
        models["base"] = model
    if "sft" not in cfg.baselines:
        models.pop("sft", None)

    # 1. controllability: every condition on held-out harmful + benign prompts
    t = time.time()
    harm = [p.text for p in data.eval_harmful]
    ben = [p.text for p in data.eval_benign]
    conditions = {"positive": tokens["positive"], "negative": tokens["negative"],
                  "rejective": tokens["rejective"], "random": tokens["random"], "none": None}
    labels_h, labels_b = {}, {}
    examples = {}
    for cond, system in conditions.items():
        outs = gen(models["cotrained"], harm + ben, system)
        labels_h[cond] = judge.judge(outs[: len(harm)], [True] * len(harm))
        labels_b[cond] = judge.judge(outs[len(harm):], [False] * len(ben))
        # only benign prompts' outputs are ever shown, truncated
        examples[cond] = [{"prompt": p[:60], "response": o[:60], "judged": lab}
                          for p, o, lab in list(zip(ben, outs[len(harm):], labels_b[cond]))[:2]]
    confusion = {c: M.label_shares(labels_h[c]) for c in conditions}
    confusion_benign = {c: M.label_shares(labels_b[c]) for c in conditions}
    secs["eval_controllability"] = time.time() - t
    progress(f"controllability judged in {secs['eval_controllability']:.0f}s")

    # 3. safety score (harmful held-out) and over-refusal (XSTest safe)
    t = time.time()
    xs = [p.text for p in data.xstest]
    safety, over = {}, {}
    safety["cotrained_positive"] = M.safety_score(labels_h["positive"])
    over["cotrained_positive"] = M.over_refusal(judge.judge(gen(models["cotrained"], xs, tokens["positive"]),
                                                            [False] * len(xs)))
    for name in ("sft", "sft_dpo", "base"):
        if name in models:
            safety[name] = M.safety_score(judge.judge(gen(models[name], harm, None), [True] * len(harm)))
            over[name] = M.over_refusal(judge.judge(gen(models[name], xs, None), [False] * len(xs)))
    secs["eval_safety"] = time.time() - t
    progress(f"safety + over-refusal in {secs['eval_safety']:.0f}s")

    # 2. safety alignment margin: first-token distributions under the three mode tokens
    t = time.time()
    sam, proj = {}, {}
    prompts = harm + ben
    for name, m in models.items():
        feats, modes = [], []
        for mode in MODES:
            feats.append(first_token_distributions(m, tok, prompts, tokens[mode], cfg.gen_batch_size, tp))
            modes += [mode] * len(prompts)
        X = np.concatenate(feats)
        sam[name] = M.safety_alignment_margin(X, modes)
        proj[name] = {"xy": M.pca_2d(X).round(5).tolist(), "mode": modes}
    secs["eval_sam"] = time.time() - t

    # 4. capability
    t = time.time()
    qs = read_mmlu(cfg.mmlu_n, seed)
    mmlu = {name: mmlu_accuracy(m, tok, qs) for name, m in models.items()}
    mmlu = {("cotrained" if k == "cotrained" else k): v for k, v in mmlu.items()}
    secs["eval_mmlu"] = time.time() - t

    return CoTrainingResult(
        tokens=tokens, confusion=confusion, confusion_benign=confusion_benign,
        mode_accuracy=M.mode_accuracy(confusion), sam=sam, projection=proj, safety_score=safety,
        xstest_over_refusal=over, mmlu=mmlu,
        train_logs={k: {"steps": v.steps, "tokens": v.tokens, "seconds": round(v.seconds, 1),
                        "tokens_per_s": round(v.tokens_per_s, 1), "loss_first": v.losses[0],
                        "loss_last": v.losses[-1]} for k, v in logs.items()},
        n_distilled=n_distilled, examples=examples, seconds={k: round(v, 1) for k, v in secs.items()})


def result_dict(res: CoTrainingResult) -> dict:
    d = asdict(res)
    d.pop("projection")
    return d
