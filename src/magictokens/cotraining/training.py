"""Training that changes weights: SFT and DPO, with LoRA or full fine-tuning.

The loss is on response tokens only (every prompt token, system token
included, is masked with -100). LoRA (peft, all linear layers) is the
default; ``lora: false`` fine-tunes every weight. CPU speed (torch 2.13, 2
cores): parameters with ``requires_grad=False`` slow bf16 forwards ~10x, so
trained models are merged back to plain modules with gradients left on.
Nothing here evaluates (that is the co-training experiment's job).

    model, log = sft(model, tok, rows, TrainConfig(), seed, steps, save_dir)
    model, log = dpo(model, tok, pairs, TrainConfig(), DPOConfig(), seed, save_dir)

With `save_dir` a finished run also writes `train.json`: its key (a hash of
the input model's weights (`models.weights_digest`), the rows, both configs, the seed, the step budget
and the thread count) and its log. A later call with the same key loads the
saved weights instead of training again, so a stage stopped after training
resumes at evaluation (the weights are the ones that run saved: a LoRA
adapter merged as training merges it).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm

from ..chat import end_of_turn_id, pad_id, prompt_ids
from ..errors import MagicTokensError
from ..fields import AutoFlag, Count, Flag, Positive, PositiveReal, Real, params
from ..hardware import AUTO, auto_dtype
from ..models import weights_digest


IGNORE = -100
CHECKPOINT_EVERY = 25       # sft steps between checkpoints (save_dir only): ~3 min of a cpu-scale run on 2 cores


@params
@dataclass
class TrainConfig:
    """One SFT run (co-training or the single-mode baseline)."""

    lora: Flag = True               # false: full fine-tuning
    lora_r: Positive = 8
    lora_alpha: Positive = 16
    lr: PositiveReal = 3e-4
    epochs: Count = 1
    batch_size: Positive = 8
    max_prompt_tokens: Positive = 96     # longer prompts are cut from the left (the template end stays)
    max_response_tokens: Positive = 64
    bf16_autocast: AutoFlag = AUTO  # auto: on where the device has native bf16 (`autocast_on`); master weights fp32
    weight_decay: Real = 0.0
    log_every: Positive = 10
    # ORPO (Hong et al. 2024): lambda of the odds-ratio term on rows that carry a "rejected" reply (sft docstring),
    # one stage, no reference model. 0: plain SFT (the run key then reads as before this field existed)
    orpo_weight: Real = 0.0


@params
@dataclass
class DPOConfig:
    beta: PositiveReal = 0.1
    lr: PositiveReal = 1e-4
    epochs: Count = 1


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


def response_logprob(model, batch: dict) -> torch.Tensor:
    """Sum of log p(response token) per sequence. (B, T) -> (B,)"""
    lp, mask = _token_logprobs(_logits(model, batch), batch["labels"])
    return (lp * mask).sum(-1)


def _token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label token) at every position and the response mask. logits (B, T-1, V), labels (B, T)
    -> ((B, T-1), (B, T-1))"""
    lab = labels[:, 1:]
    lp = torch.log_softmax(logits.float(), -1).gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return lp, lab != IGNORE


def response_loss(model, batch: dict) -> torch.Tensor:
    """Mean cross-entropy over response tokens only."""
    return _ce(_logits(model, batch), batch["labels"])


def _logits(model, batch: dict) -> torch.Tensor:
    """Next-token logits at every position but the last. (B, T) -> (B, T-1, V)"""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the response tokens of the whole batch. logits (B, T-1, V), labels (B, T)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE)


def mean_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean log p(response token): log P_bar(y|x) = (1/|y|) sum_t log p(y_t | x, y_<t).
    logits (B, T-1, V), labels (B, T) -> (B,)"""
    lp, mask = _token_logprobs(logits, labels)
    return (lp * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def odds_ratio_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """ORPO's odds-ratio term, batch mean: -log sigmoid(log odds(y_w) - log odds(y_l)), with
    odds(y) = P/(1-P) and log P the mean token log-probability (`mean_logprob`), shape (B,) each.
    log(1 - P) is log1p(-exp(log P)), kept finite where P rounds to 1."""
    def log_odds(lp):
        lp = lp.clamp(max=-1e-6)
        return lp - torch.log1p(-torch.exp(lp))
    return -F.logsigmoid(log_odds(chosen) - log_odds(rejected)).mean()


def dpo_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """DPO (Rafailov et al. 2023): -log sigmoid(beta [(pi_c - ref_c) - (pi_r - ref_r)]), batch mean.

    Inputs are summed response log-probabilities, shape (B,).
    """
    margin = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


@dataclass
class TrainLog:
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    losses: list = field(default_factory=list)
    resumed: bool = False           # loaded from a finished run's save_dir (`seconds`: that run's)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def _attach(model, cfg: TrainConfig, seed: int):
    """LoRA on all linear layers (peft) or every weight trainable. -> (model, params)"""
    torch.manual_seed(seed)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model   # here: peft imports transformers (seconds)
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
        return model, [p for p in model.parameters() if p.requires_grad]
    for p in model.parameters():
        p.requires_grad_(True)
    return model, list(model.parameters())


LATER = {"orpo_weight": 0.0}   # fields added after runs were saved: at this value left out of the key, so
                               # the saved runs still resume


def run_key(kind: str, model, data: list, seed: int, steps: int | None, *cfgs) -> str:
    """What a training run's weights depend on, hashed (module docstring)."""
    cfgs = [{k: v for k, v in asdict(c).items() if LATER.get(k, object()) != v} for c in cfgs]
    blob = json.dumps({"kind": kind, "model": weights_digest(model), "data": data, "seed": seed, "steps": steps,
                       "cfgs": cfgs, "threads": torch.get_num_threads()},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _plain(model):
    """A plain module with gradients on, in eval mode (CPU bf16 speed: module docstring)."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def _resume(model, cfg: TrainConfig, save_dir, key: str):
    """(the saved weights on a copy of `model`, their TrainLog) if `save_dir` holds a finished run of `key`,
    else None."""
    if save_dir is None or not (Path(save_dir) / "train.json").exists():
        return None
    d = json.loads((Path(save_dir) / "train.json").read_text())
    if d.get("key") != key:
        return None
    model = copy.deepcopy(model)
    if cfg.lora:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, str(save_dir)).merge_and_unload()
    else:
        load_model(model, str(Path(save_dir) / "model.safetensors"))
    return _plain(model), TrainLog(**{**d["log"], "resumed": True})


def _detach(model, cfg: TrainConfig, save_dir: str | Path | None, key: str = "", log: "TrainLog | None" = None):
    """Save (adapter or weights, then `train.json`: the run is finished) and return a plain model with
    gradients on (CPU bf16 speed)."""
    if save_dir is not None:
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        (save_dir / "train.json").unlink(missing_ok=True)
        if cfg.lora:
            model.save_pretrained(save_dir)
        else:
            save_model(model, str(save_dir / "model.safetensors"))
        if log is not None:
            (save_dir / "train.json").write_text(json.dumps({"key": key, "log": asdict(log)}))
    if cfg.lora:
        model = model.merge_and_unload()
    return _plain(model)


def autocast_on(setting: bool | str, device) -> bool:
    """bf16 autocast or not: an explicit flag wins; 'auto' -> where `hardware.auto_dtype` is bf16 (native bf16).

    On an AVX2-only CPU a bf16-autocast LoRA step is ~40x slower than fp32
    (emulated bf16: 52 s vs 1.2 s, ../shared/MODELS.md); with AVX512-BF16 or a
    GPU it is the faster one.
    """
    return auto_dtype(device) == torch.bfloat16 if setting == AUTO else bool(setting)


def _autocast(model, setting: bool | str):
    dev = next(model.parameters()).device
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast_on(setting, dev))


def step_budget(n_rows: int, cfg: TrainConfig) -> int:
    """Optimizer steps of `cfg.epochs` passes over n_rows: epochs * ceil(n_rows / batch_size). The stage gives
    every SFT run of a seed this budget of the co-training rows, and the sweep passes it the same way, so a
    stage's adapter and a sweep cell of one config share their run key."""
    return cfg.epochs * math.ceil(n_rows / cfg.batch_size)


def sft(model, tok, rows: list[dict], cfg: TrainConfig, seed: int = 0, steps: int | None = None,
        save_dir=None, checkpoint_every: int = CHECKPOINT_EVERY):
    """Supervised fine-tuning on rows {prompt, response, system}; returns (trained model, TrainLog).

    `steps` fixes the optimizer-step budget (the data is cycled, reshuffled each
    pass); default: cfg.epochs passes. The input model is not modified.
    With `save_dir`, every `checkpoint_every` steps the trainable weights, the
    optimizer, the schedule, the data order and the log go to
    `save_dir/checkpoint.pt` (under the run's key): a stopped run goes on from
    its last checkpoint and ends with the weights of an uninterrupted one.

    With `cfg.orpo_weight` = lambda > 0, a row may carry a dispreferred reply
    `rejected` to its prompt and system prompt; each batch then minimises ORPO's

        L = CE(batch) + lambda * mean_{rows with y_l} -log sigmoid(log odds(y_w) - log odds(y_l))

    (`odds_ratio_loss`): one extra forward of the rejected replies, no
    reference model. Rows without `rejected` train as plain SFT rows.
    """
    if not rows:
        raise MagicTokensError("sft: no training rows")
    key = run_key("sft", model, rows, seed, steps, cfg) if save_dir is not None else ""
    if (done := _resume(model, cfg, save_dir, key)) is not None:
        return done
    model = copy.deepcopy(model)
    model, params = _attach(model, cfg, seed)
    enc = [encode_example(tok, r["prompt"], r["response"], r.get("system"), cfg) for r in rows]
    rej = [encode_example(tok, r["prompt"], r["rejected"], r.get("system"), cfg)
           if cfg.orpo_weight > 0 and r.get("rejected") else None for r in rows]
    steps = steps or step_budget(len(enc), cfg)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)))
    rng, order, log = random.Random(seed), [], TrainLog()
    ck = Path(save_dir) / "checkpoint.pt" if save_dir is not None else None
    start, before = 0, 0.0
    if ck is not None and ck.exists() and (st := torch.load(ck, weights_only=False))["key"] == key:
        trainable = dict(model.named_parameters())
        with torch.no_grad():
            for name, v in st["params"].items():
                trainable[name].copy_(v)
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        rng.setstate(st["rng"])
        order, log, start = st["order"], TrainLog(**st["log"]), st["step"]
        before = log.seconds
    model.train()
    t0 = time.time()
    dev = next(model.parameters()).device
    bar = tqdm(total=steps, initial=start, desc="sft", unit="step", leave=False)
    for step in range(start, steps):
        if len(order) < cfg.batch_size:
            perm = list(range(len(enc)))
            rng.shuffle(perm)
            order += perm
        idx, order = order[: cfg.batch_size], order[cfg.batch_size:]
        batch = {k: v.to(dev) for k, v in collate([enc[i] for i in idx], pad_id(tok)).items()}
        paired = [j for j, i in enumerate(idx) if rej[i] is not None]
        with _autocast(model, cfg.bf16_autocast):
            logits = _logits(model, batch)
            loss = _ce(logits, batch["labels"])
            if paired:
                worse = {k: v.to(dev) for k, v in collate([rej[idx[j]] for j in paired], pad_id(tok)).items()}
                chosen = mean_logprob(logits[paired], batch["labels"][paired])
                loss = loss + cfg.orpo_weight * odds_ratio_loss(
                    chosen, mean_logprob(_logits(model, worse), worse["labels"]))
                log.tokens += int(worse["attention_mask"].sum())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        log.steps += 1
        log.tokens += int(batch["attention_mask"].sum())
        log.losses.append(float(loss.detach()))
        bar.update()
        bar.set_postfix(loss=f"{log.losses[-1]:.3f}", refresh=False)
        if ck is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            log.seconds = before + time.time() - t0
            tmp = ck.with_suffix(".tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"key": key, "step": step + 1, "order": order, "rng": rng.getstate(), "log": asdict(log),
                        "params": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
                        "opt": opt.state_dict(), "sched": sched.state_dict()}, tmp)
            tmp.replace(ck)           # atomic: a stop mid-write keeps the previous checkpoint
    bar.close()
    log.seconds = before + time.time() - t0
    out = _detach(model, cfg, save_dir, key, log)
    if ck is not None:
        ck.unlink(missing_ok=True)    # the finished run's train.json supersedes it
    return out, log


def dpo(model, tok, pairs: list[dict], cfg: TrainConfig, dcfg: DPOConfig, seed: int = 0, save_dir=None):
    """DPO from `model` (also the frozen reference) on pairs {prompt, chosen, rejected, system}."""
    if not pairs:
        raise MagicTokensError("dpo: no preference pairs")
    key = run_key("dpo", model, pairs, seed, None, cfg, dcfg) if save_dir is not None else ""
    if (done := _resume(model, cfg, save_dir, key)) is not None:
        return done
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
    bar = tqdm(total=dcfg.epochs * len(batches), desc="dpo", unit="step", leave=False)
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
            bar.update()
    bar.close()
    log.seconds = time.time() - t0
    return _detach(policy, cfg, save_dir, key, log), log
