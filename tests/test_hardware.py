"""dtype 'auto': bf16 only where the hardware computes it natively; resumed runs keep their rows' dtype."""
import json

import pytest
import torch

from magictokens import hardware as H
from magictokens import reachability as R
from magictokens.cotraining.training import autocast_on
from magictokens.models import fingerprint, resolve_dtype, verify_dtype_of
from magictokens.results import LEGACY_SEARCH_DTYPE, config_hash, recorded_search_dtype, resume_dtype

pytestmark = pytest.mark.unit

ZEN1 = """vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 1
model name\t: AMD EPYC 7551 32-Core Processor
cpu MHz\t\t: 2000.000
flags\t\t: fpu sse sse2 avx fma avx2
"""
ZEN4 = """vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9B14
cpu MHz\t\t: 2600.000
flags\t\t: fpu avx fma avx2 avx512f avx512bw avx512_bf16
"""
SAPPHIRE = """vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
cpu MHz\t\t: 2000.000
flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile
"""


def fake_cpu(monkeypatch, text: str, isa: str):
    """cpu_info() as on a machine whose /proc/cpuinfo is `text` (torch's own probes made silent)."""
    monkeypatch.setattr(H, "_cpuinfo_text", lambda: text)
    monkeypatch.setattr(H, "_torch_probe", lambda name: None)
    monkeypatch.setattr(H, "_mhz", lambda t: float(H._field(t, "cpu MHz")))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: isa)
    monkeypatch.setattr(H.platform, "machine", lambda: "x86_64")
    monkeypatch.delenv(H.AUTO_DTYPE_ENV, raising=False)     # the suite may run with "auto" forced (test_time.py)
    H.cpu_info.cache_clear()
    H._auto_dtype.cache_clear()


@pytest.fixture(autouse=True)
def fresh_probe():
    """Every test sees the probe anew, and leaves the real machine's decision behind it."""
    H.cpu_info.cache_clear()
    H._auto_dtype.cache_clear()
    yield
    H.cpu_info.cache_clear()
    H._auto_dtype.cache_clear()


def test_avx2_only_cpu_searches_and_trains_in_fp32(monkeypatch):
    fake_cpu(monkeypatch, ZEN1, "AVX2")
    info = H.cpu_info()
    assert not info.native_bf16 and info.fp32_flop_per_cycle == 16   # Zen 1 splits 256-bit FMAs
    assert H.auto_dtype("cpu") == torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert autocast_on("auto", torch.device("cpu")) is False
    # 2 cores x 2.0 GHz x 16 = 64 GFLOP/s; emulated bf16 runs on the same fp32 units
    assert H.peak_gflops(torch.float32, threads=2) == pytest.approx(64.0)
    assert H.peak_gflops(torch.bfloat16, threads=2) == pytest.approx(64.0)


def test_avx512_bf16_cpu_searches_and_trains_in_bf16(monkeypatch):
    fake_cpu(monkeypatch, ZEN4, "AVX512")
    info = H.cpu_info()
    assert info.native_bf16 and info.avx512_bf16 and not info.amx_bf16
    assert info.fp32_flop_per_cycle == 32 and info.bf16_flop_per_cycle == 64   # Zen 4: 512 bits in two halves
    assert H.auto_dtype("cpu") == torch.bfloat16
    assert resolve_dtype(None, torch.device("cpu")) == torch.bfloat16
    assert autocast_on("auto", torch.device("cpu")) is True
    assert H.peak_gflops(torch.bfloat16, threads=1) == pytest.approx(2.6 * 64)


def test_amx_counts_as_native_and_intel_avx512_has_two_full_fma_pipes(monkeypatch):
    fake_cpu(monkeypatch, SAPPHIRE, "AVX512")
    info = H.cpu_info()
    assert info.native_bf16 and info.amx_bf16 and info.fp32_flop_per_cycle == 64 and info.bf16_flop_per_cycle == 1024


def test_explicit_values_win_and_verification_stays_fp32(monkeypatch):
    fake_cpu(monkeypatch, ZEN4, "AVX512")
    cpu = torch.device("cpu")
    assert resolve_dtype("float32", cpu) == torch.float32
    assert autocast_on(False, cpu) is False
    fake_cpu(monkeypatch, ZEN1, "AVX2")
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert autocast_on(True, cpu) is True
    assert verify_dtype_of("auto") == "float32" and verify_dtype_of(None) == "float32"
    assert verify_dtype_of("bfloat16") == "bfloat16"


def test_decided_once_per_process(monkeypatch):
    fake_cpu(monkeypatch, ZEN4, "AVX512")
    assert H.auto_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(H, "_cpuinfo_text", lambda: ZEN1)    # the machine does not change under a process
    H.cpu_info.cache_clear()
    assert H.auto_dtype("cpu") == torch.bfloat16


def test_hardware_meta_records_the_capability_and_the_choice(monkeypatch):
    fake_cpu(monkeypatch, ZEN1, "AVX2")
    meta = H.hardware_meta("cpu")
    assert meta["auto_dtype"] == "float32" and meta["cpu"]["isa"] == "AVX2" and meta["cpu"]["native_bf16"] is False
    json.dumps(meta)   # goes into every result's JSON


def test_the_environment_can_force_the_avx2_path_on_a_bf16_cpu(monkeypatch):
    fake_cpu(monkeypatch, ZEN4, "AVX512")
    monkeypatch.setenv(H.AUTO_DTYPE_ENV, "float32")
    assert H.auto_dtype("cpu") == torch.float32 and autocast_on("auto", torch.device("cpu")) is False
    meta = H.hardware_meta("cpu")
    assert meta["auto_dtype"] == meta["auto_dtype_forced"] == "float32" and meta["cpu"]["native_bf16"] is True
    H._auto_dtype.cache_clear()
    monkeypatch.delenv(H.AUTO_DTYPE_ENV)
    assert H.auto_dtype("cpu") == torch.bfloat16 and "auto_dtype_forced" not in H.hardware_meta("cpu")
    H._auto_dtype.cache_clear()
    monkeypatch.setenv(H.AUTO_DTYPE_ENV, "fp16")
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        H.auto_dtype("cpu")


def write_rows(path, header, dtypes):
    with open(path, "a") as f:
        for i, d in enumerate(dtypes):
            row = {"id": f"{path.stem}-{i}", "config_hash": config_hash(header)}
            if d is not None:
                row["search_dtype"] = d
            f.write(json.dumps(row) + "\n")


def test_resumed_run_keeps_the_dtype_its_rows_were_made_in(tmp_path):
    header, other = {"method": "fast", "seed": 0}, {"method": "fast", "seed": 1}
    log = tmp_path / "true_token.jsonl"
    assert recorded_search_dtype([log], [header]) is None        # nothing finished: the hardware decides
    assert resume_dtype("auto", None) == "auto"
    write_rows(log, other, ["float32"] * 5)                       # another run's rows say nothing of this one
    assert recorded_search_dtype([log], [header]) is None
    write_rows(log, header, [None, None])                         # rows from before rows named their dtype
    assert recorded_search_dtype([log], [header]) == LEGACY_SEARCH_DTYPE == "bfloat16"
    write_rows(tmp_path / "true_token.shard0of2.jsonl", header, ["float32"] * 3)   # shard logs count too
    assert recorded_search_dtype([log], [header]) == "float32"
    assert resume_dtype("auto", "bfloat16") == "bfloat16"
    assert resume_dtype("float32", "bfloat16") == "float32"      # an explicit value still wins


def test_committed_paper_rows_resume_in_bf16_whatever_the_cpu(monkeypatch):
    """The paper-scale run of record was searched in bf16: 'auto' on an AVX2 CPU must not switch it."""
    from magictokens.config import build, load_params
    from magictokens.results import REPO_ROOT
    from test_reachability import SMOLLM2_FINGERPRINT

    fake_cpu(monkeypatch, ZEN1, "AVX2")
    P = load_params("paper")
    assert P["search_dtype"] == "auto"
    cfg = build(R.ReachabilityConfig, P["reachability"], "reachability")
    header = R.resume_header(R.method_config(cfg), P["seed"], SMOLLM2_FINGERPRINT)
    logs = R.log_dir(REPO_ROOT / "results" / "paper", cfg.method)
    recorded = recorded_search_dtype([logs / f"{f}.jsonl" for f in ("true_token", "top75", "uniform_rank")], [header])
    assert recorded == "bfloat16"
    assert resolve_dtype(resume_dtype(P["search_dtype"], recorded), torch.device("cpu")) == torch.bfloat16


def test_runner_rows_say_their_dtype(tiny, tmp_path):
    model, tok = tiny
    x = R.Instance("t-0", list(tok("the cat sat", add_special_tokens=False).input_ids), 5, "true_token", {"length": 3})
    cfg = R.method_config(R.ReachabilityConfig())
    cfg.ks = [1]
    cfg.k1_candidates = 4
    R.run_instances([x], model, tok, cfg, tmp_path / "true_token.jsonl")
    row = json.loads((tmp_path / "true_token.jsonl").read_text().splitlines()[0])
    assert row["search_dtype"] == "float32"
    header = R.resume_header(cfg, 0, fingerprint(model))
    assert recorded_search_dtype([tmp_path / "true_token.jsonl"], [header]) == "float32"


def test_forward_flops_match_a_hand_count(tiny):
    """The tiny Llama counted by hand: its linear weights, its attention triangle, one logit row."""
    model, _ = tiny
    cfg = model.config
    d, V, L, T = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers, 5
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or d // heads
    per_layer = d * heads * hd + 2 * d * kv * hd + heads * hd * d + 3 * d * cfg.intermediate_size
    want = 2 * L * per_layer * T + 4 * L * (T * (T + 1) // 2) * heads * hd + 2 * d * V
    assert H.forward_flops(model, T) == pytest.approx(want)
    assert H.forward_flops(model, T, logit_positions=T) == pytest.approx(want + 2 * d * V * (T - 1))
