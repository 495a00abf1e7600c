"""The `below` step (`controllers/below.py`) on rows a fast search already wrote.

A fast row holds what the step needs: x0, y, the found k* and prompt, and the
instance seed. `below_row` returns the row `fast.run` would have written with
`below` on: the search before the step does not depend on it, and the step
draws from its own seed (`fast.below_seed`), so an old row plus the step is the
new search's row, and a long run of record costs only the added evaluations.
"""
from __future__ import annotations

from dataclasses import asdict

import torch

from ..controllers import below, fast
from ..controllers.filters import retokenizes


def below_row(row: dict, search_model, tokenizer, config: fast.FastConfig, verify_model=None) -> dict:
    """-> a copy of the fast row `row` (no `id`/`config_hash`: the caller's log writes them) with the
    `below` step of `config` applied: k, ids, text, trace, counts, seconds and verifier counts updated."""
    out = {k: v for k, v in row.items() if k not in ("id", "config_hash")}
    out["n_candidates"] = {**row["n_candidates"], "below": 0}
    out["seconds_by_method"] = {**row["seconds_by_method"], "below": 0.0}
    if not config.below.on or row["k"] is None or row["k"] == 0 or below.grid_below(config.ks, row["k"]) is None:
        return out            # nothing below to search: what fast.run would have returned
    b, counts = below.run_alone(search_model, tokenizer, row["x0_ids"], row["target_id"], row["k"], row["ids"],
                                config.ks, config.below, config.coordinate, config.k1_candidates,
                                verify_model=verify_model, seed=fast.below_seed(row["instance_seed"]),
                                prefix_ids=row.get("prefix_ids", []))
    out.update(k=b.k, ids=b.ids, text=tokenizer.decode(b.ids),
               retokenizes=retokenizes(tokenizer, b.ids + list(row["x0_ids"])),
               trace=row["trace"] + [asdict(t) for t in b.trace], seconds=row["seconds"] + b.seconds,
               n_gradients=(row.get("n_gradients") or 0) + b.n_gradients)
    out["n_candidates"]["below"] = b.n_candidates
    out["seconds_by_method"]["below"] = b.seconds
    v = dict(row.get("verify") or {})
    out["verify"] = {**v, **{key: v.get(key, 0) + n for key, n in counts.items()}}
    out["below_of"] = row["config_hash"]       # the fast row this one extends
    return out


def device_of(model) -> str:
    """The device a row was made on, in words (a GPU's name)."""
    d = model.device
    return torch.cuda.get_device_name(d) if d.type == "cuda" else "cpu"
