"""What the machine computes natively: the dtype a search or a training step should use, and its peak.

bf16 is only fast where the hardware has it. On a GPU with bf16, or a CPU
with AVX512-BF16 / AMX (x86) or the BF16 extension (Arm), a bf16 forward is
~2x an fp32 one; on an AVX2-only CPU torch *emulates* bf16 (convert, fp32
FMA, round), measured 6x slower scoring and 40x slower LoRA steps than fp32
(../shared/MODELS.md). So ``"auto"`` means:

    auto_dtype(device) = bf16  if native_bf16(device)  else fp32

decided once per process and device kind (`auto_dtype` is cached), logged
once, and recorded in every result's metadata with the CPU's capability
(`hardware_meta`). An explicit dtype in params.yaml still wins.

``MAGICTOKENS_AUTO_DTYPE=float32`` (or ``bfloat16``) in the environment
forces what ``"auto"`` means, whatever the hardware: on an AVX512-BF16 CPU,
``float32`` runs the path an AVX2-only CPU takes (benchmarks/test_time.py
--auto-dtype float32). A forced choice is recorded (``auto_dtype_forced``).

The peak (`peak_gflops`) is cores x clock x FLOP per cycle per core of the
detected vector unit, for the dtype actually used: a run on any machine can
then say how close to the limit it scores (benchmarks/bench_search.py).
"""
from __future__ import annotations

import functools
import logging
import os
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

AUTO = "auto"
AUTO_DTYPE_ENV = "MAGICTOKENS_AUTO_DTYPE"   # forces what "auto" means: float32 | bfloat16
LEGACY_SEARCH_DTYPE = "bfloat16"   # the search dtype of every row written before rows said which (params default then)


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as torch and /proc/cpuinfo see it."""

    name: str                   # model name
    isa: str                    # torch's dispatch capability: DEFAULT | AVX2 | AVX512 | ZVECTOR | ...
    cores: int                  # cores this process may use (affinity), not the host's
    mhz: float | None           # nominal clock (max frequency where the kernel tells it, else 'cpu MHz')
    avx512_bf16: bool
    amx_bf16: bool
    arm_bf16: bool
    native_bf16: bool           # any of the three: bf16 matmuls run in hardware, not emulated
    fp32_flop_per_cycle: int    # per core: FMA units x lanes x 2
    bf16_flop_per_cycle: int    # per core, where native_bf16 (else the fp32 figure: emulation runs fp32 FMAs)


def _cpuinfo_text() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:   # macOS, Windows: no /proc
        return ""


def _field(text: str, key: str) -> str | None:
    m = re.search(rf"^{key}\s*:\s*(.*)$", text, re.M)
    return m.group(1).strip() if m else None


def _flags(text: str) -> set[str]:
    return set((_field(text, "flags") or _field(text, "Features") or "").split())


def _torch_probe(name: str) -> bool | None:
    """torch.cpu._is_<name>_supported() where this torch has it (2.3+), else None."""
    fn = getattr(torch.cpu, f"_is_{name}_supported", None)
    try:
        return bool(fn()) if fn is not None else None
    except Exception:   # a probe that fails says nothing
        return None


def _mhz(text: str) -> float | None:
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000
    except (OSError, ValueError):
        pass
    v = _field(text, "cpu MHz")
    return float(v) if v else None


def _fp32_flop_per_cycle(isa: str, flags: set[str], text: str) -> int:
    """Peak fp32 FLOP per cycle per core: 2 FMA pipes x lanes x 2 (multiply + add).

    AVX512: 16 lanes, AVX2: 8, SSE/NEON: 4. AMD splits wide vectors: Zen 1
    (family 23, models < 0x30) runs 256-bit AVX2 as two 128-bit halves (16),
    Zen 4 runs 512-bit AVX512 as two 256-bit halves (32).
    """
    family, model = _field(text, "cpu family"), _field(text, "model")
    amd = "AuthenticAMD" in (_field(text, "vendor_id") or "")
    fam, mod = (int(family), int(model)) if family and model and model.isdigit() else (0, 0)
    if isa.startswith("AVX512") or "avx512f" in flags:
        return 32 if amd else 64
    if isa == "AVX2" or "avx2" in flags:
        return 16 if amd and fam == 23 and mod < 0x30 else 32
    return 16


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    text = _cpuinfo_text()
    flags = _flags(text)
    isa = torch.backends.cpu.get_cpu_capability()
    avx512_bf16 = _torch_probe("avx512_bf16")
    avx512_bf16 = ("avx512_bf16" in flags) if avx512_bf16 is None else avx512_bf16
    amx = _torch_probe("amx_tile")
    amx = ("amx_bf16" in flags) if amx is None else amx
    arm = platform.machine().lower() in ("aarch64", "arm64") and "bf16" in flags
    native = bool(avx512_bf16 or amx or arm)
    fp32 = _fp32_flop_per_cycle(isa, flags, text)
    # vdpbf16ps / BFDOT: two bf16 products per fp32 lane; AMX tiles are far wider (Intel: 1024 per cycle)
    bf16 = 1024 if amx else (2 * fp32 if native else fp32)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return CpuInfo(name=_field(text, "model name") or platform.processor() or platform.machine(), isa=isa,
                   cores=cores, mhz=_mhz(text), avx512_bf16=bool(avx512_bf16), amx_bf16=bool(amx), arm_bf16=arm,
                   native_bf16=native, fp32_flop_per_cycle=fp32, bf16_flop_per_cycle=bf16)


def cpu_slug(info: CpuInfo | None = None) -> str:
    """A file-name tag for the CPU kind: 'bf16' where bf16 is native, else the ISA ('avx2', 'avx512', ...)."""
    info = info or cpu_info()
    return "bf16" if info.native_bf16 else info.isa.lower()


def native_bf16(device: torch.device | str) -> bool:
    """Does `device` compute bf16 in hardware? CUDA: torch's own check; CPU: `cpu_info().native_bf16`."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_info().native_bf16
    return False   # mps, xpu, ...: fp32 until measured there


def forced_auto_dtype() -> torch.dtype | None:
    """The dtype $MAGICTOKENS_AUTO_DTYPE forces "auto" to, or None where it is unset."""
    name = os.environ.get(AUTO_DTYPE_ENV, "").strip()
    if not name:
        return None
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"{AUTO_DTYPE_ENV}={name!r}: use float32 or bfloat16, or unset it to let the hardware choose")
    return getattr(torch, name)


@functools.lru_cache(maxsize=None)
def _auto_dtype(device_type: str) -> torch.dtype:
    native = native_bf16(device_type)
    forced = forced_auto_dtype()
    dtype = forced or (torch.bfloat16 if native else torch.float32)
    what = cpu_info().isa if device_type == "cpu" else device_type
    log.info("dtype auto on %s (%s): %s (%s bf16%s)", device_type, what, str(dtype).replace("torch.", ""),
             "native" if native else "no native", f"; forced by ${AUTO_DTYPE_ENV}" if forced else "")
    return dtype


def auto_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 where `device` computes it natively, else fp32. Decided once per process and device kind."""
    return _auto_dtype(torch.device(device).type)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def hardware_meta(device: torch.device | str) -> dict:
    """What a result records of the machine: the CPU's capability and, on a GPU, its bf16 support."""
    device = torch.device(device)
    out = {"cpu": asdict(cpu_info()), "auto_dtype": dtype_name(auto_dtype(device))}
    if forced_auto_dtype() is not None:
        out["auto_dtype_forced"] = out["auto_dtype"]
    if device.type == "cuda":
        out["cuda_bf16"] = native_bf16(device)
    return out


def peak_gflops(dtype: torch.dtype, threads: int | None = None, info: CpuInfo | None = None) -> float | None:
    """CPU peak GFLOP/s for `dtype` on `threads` cores: cores x GHz x FLOP per cycle per core.

    bf16 without native support runs on the fp32 units (emulation), so its
    peak is the fp32 one. None where the clock is unknown.
    """
    info = info or cpu_info()
    if info.mhz is None:
        return None
    per_cycle = info.bf16_flop_per_cycle if dtype == torch.bfloat16 and info.native_bf16 else info.fp32_flop_per_cycle
    cores = min(threads or torch.get_num_threads(), info.cores)
    return cores * info.mhz / 1000 * per_cycle


def forward_flops(model, seq_len: int, logit_positions: int = 1) -> float:
    """FLOPs of one forward of one sequence of `seq_len` tokens, logits at `logit_positions` positions.

        2 * P_lin * T                       every linear layer of every block (P_lin: their weights)
      + 2 * 2 * L * (T (T + 1) / 2) * d_att causal attention: Q K^T and A V, the lower triangle only
      + 2 * d * V * logit_positions         the output projection (scoring needs the last position only)

    Embedding lookups, norms and activations are left out (< 1% here). SmolLM2-135M at T = 17,
    one logit position: 3.7 GFLOP.
    """
    out_emb = model.get_output_embeddings()
    lin = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not out_emb)
    cfg = model.config
    heads = cfg.num_attention_heads
    d_att = heads * (getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    vocab, d = out_emb.weight.shape
    T = int(seq_len)
    return 2.0 * lin * T + 4.0 * cfg.num_hidden_layers * T * (T + 1) / 2 * d_att + 2.0 * d * vocab * logit_positions
