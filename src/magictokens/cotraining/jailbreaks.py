"""Jailbreak templates wrapped around harmful prompts: paper B's robustness check (its Figure 1).

The templates are PyRIT's (MIT; `data/safety/pyrit/jailbreak_templates/*.yaml`,
each a text with one ``{{ prompt }}`` slot). Each held-out harmful prompt gets
a seeded sample of templates; the safety score with and without them gives
the relative drop per model (paper B: 3.8% co-trained vs 21.5% baselines).

    templates = load_templates(max_chars=1200)
    attacked = wrap_prompts(prompts, templates, per_prompt=2, seed=0)   # [(prompt index, template name, text)]
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..data import data_path
from ..errors import MagicTokensError

TEMPLATES = "safety/pyrit/jailbreak_templates"
SLOT = re.compile(r"\{\{\s*prompt\s*\}\}")


@dataclass(frozen=True)
class Template:
    name: str        # file stem, e.g. "aim"
    text: str        # with exactly one {{ prompt }} slot


def load_templates(max_chars: int | None = None, data_dir=None) -> list[Template]:
    """Every single-slot template (top-level files), sorted by name; `max_chars` drops long ones.

    Long templates are left out on a CPU budget (their tokens cost generation
    time, and a prompt cut to `max_prompt_tokens` would lose the request).
    """
    root = data_path(TEMPLATES, data_dir)
    out = []
    for f in sorted(Path(root).glob("*.yaml")):
        d = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        text = str(d.get("value") or "")
        if len(SLOT.findall(text)) != 1:
            continue
        if max_chars is not None and len(text) > max_chars:
            continue
        out.append(Template(f.stem, text.strip()))
    if not out:
        raise MagicTokensError(f"no usable jailbreak template in {root} (max_chars={max_chars}): "
                               "raise max_chars or run `magictokens data`")
    return out


def wrap(template: Template, prompt: str) -> str:
    """The template with the harmful request in its slot."""
    return SLOT.sub(lambda _: prompt, template.text)


def wrap_prompts(prompts: list[str], templates: list[Template], per_prompt: int, seed: int = 0
                 ) -> list[tuple[int, str, str]]:
    """Each prompt inside `per_prompt` distinct templates, drawn with a seeded RNG.

    -> [(prompt index, template name, wrapped text)], prompt-major order.
    """
    if per_prompt <= 0 or per_prompt > len(templates):
        raise MagicTokensError(f"jailbreak templates per prompt = {per_prompt}: want 1..{len(templates)}")
    rng = random.Random(f"jailbreak-{seed}")
    out = []
    for i, p in enumerate(prompts):
        for t in rng.sample(templates, per_prompt):
            out.append((i, t.name, wrap(t, p)))
    return out
