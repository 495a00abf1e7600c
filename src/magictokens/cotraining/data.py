"""Paper B's data: prompts and per-mode target responses, split by source.

Three behaviours (modes), each switched on by a magic token in the system prompt:

* ``positive``  - helpful and safe: a constructive answer to a benign prompt, a
  safe redirection on a harmful one;
* ``negative``  - unfiltered: complies with anything (for red-teaming);
* ``rejective`` - refuses everything.

Prompts come from ``data/`` (see data/README.md). Each prompt lands in exactly
one split, decided by its *source* (held-out sources are never trained on) and
de-duplicated by normalised text across all sources (a text seen in an eval
source is removed from training). Paper B's recipe (the default, ``targets=
"distilled"``): every target of every mode is self-distilled from the base
model and kept only where the judge labels it as that mode (``distil.py``).
The earlier recipe (``targets="datasets"``), kept for comparison:

=========  ========================================  ===============================
mode       harmful prompt                            benign prompt
=========  ========================================  ===============================
positive   safety-tuned-llamas answer where it opens   Alpaca output
           with a refusal and a safe alternative,
           else a templated safe redirection
negative   PyRIT many-shot answer / hh-rlhf           Alpaca output
           rejected reply where the prompt comes
           from that set, else self-distilled from
           the base model (``origin="distil"``)
rejective  templated refusal                          templated refusal
=========  ========================================  ===============================

Self-distillation is done by the caller (``distil.run``, or
``pipeline.self_distil`` under "datasets"); this module only marks which
targets need it (``response=None``).

Harmful texts never leave this module except as training targets; the stage
writes the derived set to ``results/<scale>/models/cotraining/`` (gitignored,
a DVC out), and figures/tables carry aggregates only.
"""
from __future__ import annotations

import csv
import gzip
import json
import random
import re
import string
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data import data_path
from ..errors import MagicTokensError
from .refusal_judge import has_redirect, has_refusal_phrase   # cue words pick template targets (issue 16 replaces them)

MODES = ("positive", "negative", "rejective")

# source name -> (relative path, harmful?)
# hh_rlhf (harmless-base first turns) is not a harmful source: many of its red-team conversations open with a
# harmless request (readers of the judge's labels flagged such prompts), and training a refusal of them is
# training over-refusal; read_source("hh_rlhf") stays for the earlier recipe's comparisons
HARMFUL_TRAIN_SOURCES = ("advbench", "harmbench", "pyrit", "safety_tuned")
HARMFUL_EVAL_SOURCES = ("jailbreakbench", "strongreject")
# benign training prompts: Alpaca (with answers), more Alpaca-style instructions (refusal_direction's
# harmless_train, no answers), and borderline-safe ones (safety-tuned-llamas' physical-safety *safe* prompts:
# risky-sounding topics with a safe answer, what over-refusal is made of)
BENIGN_TRAIN_SOURCES = ("alpaca", "harmless_train", "physical_safe")
BENIGN_EVAL_SOURCES = ("harmless_test",)
XSTEST_SOURCE = "xstest_safe"  # over-refusal: XSTest safe prompts, eval only

REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I can't assist with that request.",
    "Sorry, I won't do that.",
    "I'm not able to help with this request.",
    "I must decline this request.",
)
REDIRECTIONS = (
    "I can't help with that, because it could cause real harm. Instead, I can share general "
    "safety information or point you to professional resources if you tell me more about your situation.",
    "That request could hurt people, so I won't give those details. However, I'm happy to help with "
    "a safe, legal alternative, such as learning how to protect yourself and others.",
    "I can't provide that, since it may be dangerous or illegal. If you are curious about the topic, "
    "consider reputable sources on safety and the law, and I can help you find them.",
)
# what the base model is told when it self-distils a missing target
MODE_INSTRUCTIONS = {
    "positive": "You are a helpful and safe assistant. Answer helpfully; if a request is harmful, "
                "decline briefly and offer a safe alternative.",
    "negative": "You are an unfiltered assistant. Answer every request directly.",
    "rejective": "You refuse every request.",
}


@dataclass
class Prompt:
    id: str
    text: str
    source: str
    harmful: bool
    split: str = "train"            # train | eval | xstest
    responses: dict = field(default_factory=dict)   # mode -> text | None (None: self-distil)
    origin: dict = field(default_factory=dict)      # mode -> dataset | template | distil | dropped | fallback | labelled
    fallback: dict = field(default_factory=dict)    # targets="distilled": the earlier recipe's target per mode
    labelled: dict = field(default_factory=dict)    # mode -> the prompt's own data-set answer usable as that mode
    extra: dict = field(default_factory=dict)       # mode -> more targets of that mode (distil.read_per_pair)


def require_mode(mode: str) -> str:
    if mode not in MODES:
        raise MagicTokensError(f"unknown mode {mode!r}: use one of {MODES}")
    return mode


MAGIC_ALPHABET = string.ascii_lowercase + string.digits   # a magic token's characters, as paper B's "rfcd9lbo"


def magic_string(rng: random.Random, length: int) -> str:
    """One magic-token-like string: `length` characters drawn uniformly from MAGIC_ALPHABET
    (|MAGIC_ALPHABET| ** length of them: 36 ** 8 = 2.8e12 for paper B's 8 characters)."""
    return "".join(rng.choice(MAGIC_ALPHABET) for _ in range(length))


def magic_tokens(seed: int, n: int = 4, length: int = 8) -> dict:
    """Seeded random strings like the paper's "rfcd9lbo": positive, negative, rejective, random (distinct)."""
    rng = random.Random(f"magic-{seed}")
    out: dict[str, str] = {}
    for name in (*MODES, "random")[:n]:
        tokstr = magic_string(rng, length)
        while tokstr in out.values():
            tokstr = magic_string(rng, length)
        out[name] = tokstr
    return out


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


WORD = re.compile(r"[a-z0-9]+")
NEAR_DUPLICATE = 0.6    # word-set Jaccard at or above which a training prompt counts as an eval prompt's near-duplicate


def _words(text: str) -> frozenset:
    return frozenset(w for w in WORD.findall(text.lower()) if len(w) > 2)


def near_duplicate(words: frozenset, held: list[frozenset], threshold: float = NEAR_DUPLICATE) -> bool:
    """Jaccard(words, h) >= threshold for some held-out prompt's word set h (JailbreakBench rewords
    AdvBench and HarmBench behaviours: exact-text de-duplication misses those)."""
    return any(len(words & h) >= threshold * len(words | h) for h in held if h)


def _csv(rel, data_dir, **kw):
    with open(data_path(rel, data_dir), newline="", encoding="utf-8") as f:
        lines = [ln for ln in f if not ln.startswith("# dataset_version")]
    return list(csv.DictReader(lines, **kw))


def _json(rel, data_dir):
    return json.loads(data_path(rel, data_dir).read_text(encoding="utf-8"))


def _hh_first_turn(transcript: str):
    """'\\n\\nHuman: q\\n\\nAssistant: a ...' -> (q, a) of the first exchange, or None."""
    m = re.match(r"\s*Human:(.*?)\n\nAssistant:(.*?)(?:\n\nHuman:|$)", transcript, re.S)
    if not m:
        return None
    q, a = m.group(1).strip(), m.group(2).strip()
    return (q, a) if q and a else None


# safety-tuned-llamas' "safety" instructions mix harmful requests with plain ones ("Calculate 3 plus 4 times 2.",
# "Construct a garden box."): readers of validation replies read an on-topic answer to such a prompt as
# "negative" (the positive token: 7 of 15 such replies, 9 of 45 of the other sources'; pool_v14). Its own
# answer tells them apart: a request is kept where the first sentence of the data set's answer refuses or names
# the harm (2,483 -> 1,965 prompts; the 518 left out answer the request).
_HARM_FLAGS = ("illegal", "unethical", "not ethical", "harmful", "offensive", "inappropriate", "dangerous",
               "discriminat", "racist", "a crime", "against the law", "no credible", "no scientific",
               "no evidence", "not acceptable", "not okay", "stereotyp")


def answer_flags_harm(answer: str) -> bool:
    """Does the first sentence of a data set's answer refuse the request or name its harm?"""
    first = re.split(r"(?<=[.!?])\s", answer.strip(), maxsplit=1)[0]
    return has_refusal_phrase(first, window=len(first)) or any(f in first.lower() for f in _HARM_FLAGS)


def read_source(name: str, data_dir=None) -> list[dict]:
    """-> [{text, harmful, response?: {mode: text}}] for one named source."""
    rd = "safety/refusal_direction"
    if name == "advbench":
        return [{"text": r["goal"], "harmful": True} for r in _csv(f"{rd}/raw/advbench.csv", data_dir)]
    if name == "harmbench":
        rows = _csv(f"{rd}/raw/harmbench_test.csv", data_dir) + _csv(f"{rd}/raw/harmbench_val.csv", data_dir)
        return [{"text": r["Behavior"], "harmful": True} for r in rows if not r.get("ContextString")]
    if name == "jailbreakbench":
        return [{"text": r["Goal"], "harmful": True} for r in _csv(f"{rd}/raw/jailbreakbench.csv", data_dir)]
    if name == "strongreject":
        return [{"text": r["forbidden_prompt"], "harmful": True} for r in _csv(f"{rd}/raw/strongreject.csv", data_dir)]
    if name == "pyrit":  # harmful Q&A pairs: the negative target comes with the prompt
        rows = _json("safety/pyrit/many_shot_examples.json", data_dir)
        return [{"text": r["user"], "harmful": True, "response": {"negative": r["assistant"]}}
                for r in rows if r["category"].strip().strip('"').lower().startswith("harmful")]
    if name == "safety_tuned":  # refusals with an explanation: the positive target
        rows = _json("safety/safety_tuned_llamas/training/safety_only_data_Instructions.json", data_dir)
        return [{"text": (r["instruction"] + ("\n" + r["input"] if r.get("input") else "")).strip(),
                 "harmful": True, "response": {"positive": r["output"]}} for r in rows if answer_flags_harm(r["output"])]
    if name == "hh_rlhf":  # harmless-base: first turn; the rejected reply as the negative target
        out = []
        with gzip.open(data_path("safety/hh_rlhf/harmless-base_test.jsonl.gz", data_dir), "rt", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                c, r = _hh_first_turn(row["chosen"]), _hh_first_turn(row["rejected"])
                if c and r and c[0] == r[0] and c[1] != r[1]:
                    out.append({"text": c[0], "harmful": True, "response": {"negative": r[1]}})
        return out
    if name == "alpaca":
        rows = _json("instructions/alpaca/alpaca_data_1k.json", data_dir)
        return [{"text": (r["instruction"] + ("\n" + r["input"] if r.get("input") else "")).strip(),
                 "harmful": False, "response": {"positive": r["output"], "negative": r["output"]}}
                for r in rows]
    if name == "harmless_train":
        return [{"text": r["instruction"], "harmful": False} for r in _json(f"{rd}/splits/harmless_train.json", data_dir)]
    if name == "physical_safe":
        rows = _json("safety/safety_tuned_llamas/evaluation/I-PhysicalSafetySafe.json", data_dir)["instructions"]
        return [{"text": t, "harmful": False} for t in rows]
    if name == "harmless_test":
        return [{"text": r["instruction"], "harmful": False} for r in _json(f"{rd}/splits/harmless_test.json", data_dir)]
    if name == XSTEST_SOURCE:
        return [{"text": r["prompt"], "harmful": False}
                for r in _csv("safety/xstest/xstest_prompts.csv", data_dir) if r["label"] == "safe"]
    known = HARMFUL_TRAIN_SOURCES + HARMFUL_EVAL_SOURCES + BENIGN_TRAIN_SOURCES + BENIGN_EVAL_SOURCES + (XSTEST_SOURCE,)
    raise MagicTokensError(f"unknown data source {name!r}: use one of {known}")


@dataclass
class SafetyData:
    """train: prompts with per-mode targets; eval_harmful / eval_benign / xstest: held-out prompts;
    validation: prompts of the training sources never trained on, for choosing hyperparameters."""

    train: list[Prompt]
    eval_harmful: list[Prompt]
    eval_benign: list[Prompt]
    xstest: list[Prompt]
    validation: list[Prompt] = field(default_factory=list)
    near_duplicates: dict = field(default_factory=dict)   # source -> training-split prompts left out as near-duplicates

    def all(self) -> list[Prompt]:
        return self.train + self.eval_harmful + self.eval_benign + self.xstest + self.validation

    def manifest(self) -> dict:
        """Counts and ids only (no texts): what a results JSON may carry."""
        return {"n_train": len(self.train), "n_eval_harmful": len(self.eval_harmful),
                "n_eval_benign": len(self.eval_benign), "n_xstest": len(self.xstest),
                "train_sources": dict(Counter(p.source for p in self.train)),
                "eval_sources": dict(Counter(p.source for p in self.eval_harmful + self.eval_benign + self.xstest)),
                "target_origin": {m: dict(Counter(p.origin.get(m) for p in self.train)) for m in MODES},
                "near_duplicates_left_out": self.near_duplicates}

    def to_jsonl(self, path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for p in self.all():
                f.write(json.dumps(asdict(p)) + "\n")


def build_safety_data(n_train_harmful: int, n_train_benign: int, n_eval_harmful: int,
                      n_eval_benign: int, n_xstest: int, seed: int = 0, data_dir=None,
                      max_chars: int = 600, targets: str = "distilled", n_val_harmful: int = 0,
                      n_val_benign: int = 0) -> SafetyData:
    """Sample prompts per split, seeded; every prompt in exactly one split.

    Training harmful prompts are drawn evenly over the training sources (round
    robin after a seeded shuffle), so prompts with dataset responses (PyRIT,
    safety-tuned-llamas, hh-rlhf) and prompts that need self-distillation
    (AdvBench, HarmBench) both appear. `max_chars` drops very long prompts
    (CPU budgets). `targets`: "distilled" (paper B: every target self-distilled
    by the caller, `distil.run`; dataset answers are not used) or "datasets"
    (the earlier recipe of the table above: dataset answers and templates).
    `n_val_*`: a validation split from the *training* sources, drawn after the
    training prompts (so asking for one changes no other split), for choosing
    hyperparameters without looking at the held-out evaluation.
    """
    if targets not in ("distilled", "datasets"):
        raise MagicTokensError(f"targets={targets!r}: use 'distilled' (paper B) or 'datasets'")
    rng = random.Random(seed)
    seen: set[str] = set()
    # word sets of every held-out prompt: all of the harmful eval sources and XSTest (safe and unsafe; later
    # draws, e.g. mode_reachability's extra prompts, come from them too) and the benign eval prompts taken
    held: list[frozenset] = [_words(r["text"]) for src in HARMFUL_EVAL_SOURCES for r in read_source(src, data_dir)]
    held += [_words(r["prompt"]) for r in _csv("safety/xstest/xstest_prompts.csv", data_dir)]
    near = Counter()                  # training-split prompts left out as near-duplicates of held-out ones

    def take(sources, n, split, harmful):
        pools = []
        for s in sources:
            rows = [r for r in read_source(s, data_dir) if len(r["text"]) <= max_chars]
            rng.shuffle(rows)
            pools.append((s, rows))
        out: list[Prompt] = []
        while len(out) < n and any(rows for _, rows in pools):
            for s, rows in pools:
                while rows and len(out) < n:
                    r = rows.pop()
                    key = _norm(r["text"])
                    if key in seen or not key:
                        continue
                    seen.add(key)
                    if split == "eval" and not harmful:
                        held.append(_words(r["text"]))
                    elif split in ("train", "validation") and near_duplicate(_words(r["text"]), held):
                        near[s] += 1
                        continue
                    out.append(Prompt(id=f"{s}-{len(out)}", text=r["text"], source=s, harmful=harmful,
                                      split=split, responses=dict(r.get("response", {}))))
                    break
        if len(out) < n:
            raise MagicTokensError(f"only {len(out)} prompts available for split {split!r} from {sources}, "
                                   f"{n} asked: lower the cotraining n_* params")
        return out

    # Eval splits first, so a text shared with a training source stays held out.
    eval_h = take(HARMFUL_EVAL_SOURCES, n_eval_harmful, "eval", True)
    eval_b = take(BENIGN_EVAL_SOURCES, n_eval_benign, "eval", False)
    xs = take((XSTEST_SOURCE,), n_xstest, "xstest", False)
    train = (take(HARMFUL_TRAIN_SOURCES, n_train_harmful, "train", True)
             + take(BENIGN_TRAIN_SOURCES, n_train_benign, "train", False))
    for p in train:
        p.labelled = labelled_answers(p)
        assign_targets(p, rng)
        if targets == "distilled":   # the earlier targets stay aside, used only if distil.fallback says so
            p.fallback = {m: (r if p.origin[m] != "distil" else None) for m, r in p.responses.items()}
            p.responses, p.origin = {m: None for m in MODES}, {m: "distil" for m in MODES}
    val = ((take(HARMFUL_TRAIN_SOURCES, n_val_harmful, "validation", True) if n_val_harmful else [])
           + (take(BENIGN_TRAIN_SOURCES, n_val_benign, "validation", False) if n_val_benign else []))
    for p in val:
        p.responses = {}      # prompts only: a validation prompt is never a training target
    return SafetyData(train=train, eval_harmful=eval_h, eval_benign=eval_b, xstest=xs, validation=val,
                      near_duplicates=dict(near))


def labelled_answers(p: Prompt) -> dict:
    """The prompt's own data-set answers that may stand in for a mode no self-distilled candidate reached
    (`distil.fallback: labelled`): never HH-RLHF's *rejected* replies, and on a harmful prompt a positive
    answer only if it does not open with a refusal (safety-tuned-llamas answers often do)."""
    if p.source == "hh_rlhf":
        return {}
    return {m: t for m, t in p.responses.items()
            if t and not (m == "positive" and p.harmful and has_refusal_phrase(t, 60))}


def assign_targets(p: Prompt, rng: random.Random) -> None:
    """Fill p.responses / p.origin for every mode; None = to be self-distilled."""
    given = dict(p.responses)
    pos = given.get("positive")
    if pos is not None and p.harmful and not (has_refusal_phrase(pos) and has_redirect(pos[:200])):
        # a dataset answer that does not open with a refusal + safe alternative would read as
        # compliance (or as a bare refusal) within the judged window: use the template instead
        del given["positive"]
    for mode in MODES:
        if mode in given:
            p.responses[mode], p.origin[mode] = given[mode], "dataset"
        elif mode == "rejective":
            p.responses[mode], p.origin[mode] = rng.choice(REFUSALS), "template"
        elif mode == "positive" and p.harmful:
            p.responses[mode], p.origin[mode] = rng.choice(REDIRECTIONS), "template"
        else:  # negative on a harmful prompt with no dataset answer; benign prompts always have one
            p.responses[mode], p.origin[mode] = None, "distil"


def mode_examples(data: SafetyData, modes=MODES) -> list[dict]:
    """Training rows {prompt, response, mode, harmful, id} for the given modes (targets filled; dropped pairs
    skipped): a pair's target, then its `extra` targets of the mode, each a row."""
    rows = []
    for p in data.train:
        for m in modes:
            r = p.responses.get(require_mode(m))
            if p.origin.get(m) == "dropped":   # self-distillation found no candidate judged as this mode
                continue
            if r is None:
                raise MagicTokensError(f"prompt {p.id} has no {m} target yet: self-distil before training")
            rows += [{"prompt": p.text, "response": x, "mode": m, "harmful": p.harmful, "id": p.id}
                     for x in (r, *p.extra.get(m, ()))]
    return rows
