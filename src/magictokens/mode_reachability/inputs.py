"""What the study takes from the cotraining stage: its held-out harmful prompts and its trained models."""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_model as load_weights

from ..cotraining.data import _norm, build_safety_data
from ..errors import MagicTokensError
from ..models import load_model


def held_out_prompts(ccfg, n: int, seed: int) -> list[str]:
    """The first `n` held-out harmful prompts: the cotraining stage's own, then more from its sources.

    `ccfg`: the CoTrainingConfig. The cotraining stage evaluates on the first
    `n_eval_harmful` prompts of its eval split. Asking `build_safety_data`
    for more would keep those (the eval split is drawn first, round robin over
    seeded shuffles: a larger n extends the list) but would also keep the new
    ones out of training (de-duplication) and so change the training split.
    So the stage's split is rebuilt with its own counts, and the extra prompts
    come from a second, eval-only draw with the same seed: its first
    `n_eval_harmful` must be the stage's, and any later one that the stage
    used (trained on, or as a benign / XSTest prompt) is skipped.
    """
    def draw(n_eval_harmful: int, whole: bool):
        counts = ((ccfg.n_train_harmful, ccfg.n_train_benign, n_eval_harmful, ccfg.n_eval_benign, ccfg.n_xstest)
                  if whole else (0, 0, n_eval_harmful, 0, 0))
        try:
            return build_safety_data(*counts, seed=seed, max_chars=ccfg.max_prompt_chars)
        except MagicTokensError as exc:
            if whole:
                raise
            raise MagicTokensError(f"mode_reachability.n_prompts = {n}: the held-out sources run out ({exc}); "
                                   f"lower mode_reachability.n_prompts") from None

    data = draw(ccfg.n_eval_harmful, True)
    own = [p.text for p in data.eval_harmful]
    if n <= len(own):
        return own[:n]
    used = {_norm(p.text) for p in data.all()}
    ask = n
    while True:
        more = [p.text for p in draw(ask, False).eval_harmful]
        if more[:len(own)] != own:
            raise MagicTokensError("the held-out harmful prompts changed with their count: cotraining.data's eval draw "
                                   f"is no longer prefix-stable; set mode_reachability.n_prompts <= {len(own)}")
        extra = [t for t in more[len(own):] if _norm(t) not in used]
        if len(own) + len(extra) >= n:
            return own + extra[:n - len(own)]
        ask += n - len(own) - len(extra)


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
            from peft import PeftModel   # here: peft imports transformers (seconds)
            model = PeftModel.from_pretrained(model, str(d)).merge_and_unload()
        elif (d / "model.safetensors").exists():
            load_weights(model, str(d / "model.safetensors"), strict=False)
        else:
            raise MagicTokensError(f"no trained weights in {d}: run the cotraining stage first "
                                   f"(`magictokens run cotraining --scale ...`)")
    for p in model.parameters():   # frozen params make CPU bf16 forwards ~10x slower (models.py)
        p.requires_grad_(True)
    return model.eval(), tok
