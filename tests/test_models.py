import pytest
import torch

from magictokens.errors import MagicTokensError
from magictokens.models import DEFAULT_MODEL, load_model, load_search_pair
from magictokens.pipeline import main, parse_sets, parse_shard


@pytest.mark.unit
def test_unknown_model_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import: without this a hub name waits ~45 s on the network
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(MagicTokensError, match="cannot load model"):
        load_model("no-such-org/no-such-model-xyz")
    with pytest.raises(MagicTokensError, match="cannot load model"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(MagicTokensError, match="non-empty"):
        load_model("")
    with pytest.raises(MagicTokensError, match="unknown dtype"):
        load_model("tiny-random-llama", dtype="float8")


@pytest.mark.slow
def test_default_model_loads_offline_and_answers():
    """The packaged SmolLM2-135M-Instruct: real weights, no network."""
    search, verify, tok = load_search_pair(DEFAULT_MODEL, "bfloat16", "float32", "cpu")
    assert search.dtype == torch.bfloat16 and verify.dtype == torch.float32
    assert all(p.requires_grad for p in search.parameters())   # see models.py: frozen params are 10x slower on CPU
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        nxt = verify(input_ids=ids, logits_to_keep=1).logits[0, -1].argmax()
    assert tok.decode(nxt).strip() == "Paris"


@pytest.mark.unit
def test_cli_errors_are_one_line(capsys):
    assert main(["run", "no_such_stage"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown stage")
    with pytest.raises(MagicTokensError, match="key.path=value"):
        parse_sets(["oops"])
    assert parse_sets(["a.b=3", "a.c=[1, 2]", "m=gpt2"]) == {"a": {"b": 3, "c": [1, 2]}, "m": "gpt2"}
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "1of4", "-1/2"):
        with pytest.raises(MagicTokensError, match="--shard"):
            parse_shard(bad)
