"""One attention head: its slices of a Llama layer, its outputs with and without
controls, and the corrected reachability bound (see the package docstring)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import MagicTokensError

DTYPE = torch.float64   # the check runs in float64: bound and achieved differ by < 1e-12 of rounding


VIOLATION_RTOL = 1e-9   # achieved > bound * (1 + rtol) counts as a violation


@dataclass
class Head:
    """One attention head's linear maps (float64), as the theorem sees them."""

    layer: int
    head: int
    kv_head: int
    W_q: torch.Tensor           # (d, d_h)
    W_k: torch.Tensor           # (d, d_h)
    W_v: torch.Tensor           # (d, d_h)
    rope_theta: float | None = None

    @property
    def d_head(self) -> int:
        return self.W_q.shape[1]

    def sigmas(self) -> tuple[float, float, float]:
        """Largest singular values (sigma_q, sigma_k, sigma_v)."""
        return tuple(float(torch.linalg.matrix_norm(W, ord=2)) for W in (self.W_q, self.W_k, self.W_v))


def _decoder_layers(model):
    try:
        return model.model.layers
    except AttributeError:
        raise MagicTokensError(f"{type(model).__name__} is not a Llama-style model (no model.layers): "
                               "the theorem check reads q_proj/k_proj/v_proj of LlamaAttention") from None


def resolve_layers(model, layers) -> list[int]:
    n = len(_decoder_layers(model))
    out = []
    for L in layers:
        L = int(L)
        if not -n <= L < n:
            raise MagicTokensError(f"theorem.layers: layer {L} does not exist (the model has {n} layers)")
        out.append(L % n)
    return sorted(set(out))


def rope_theta_of(config) -> float:
    rp = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rp.get("rope_type", "default") not in ("default", None):
        raise MagicTokensError(f"rope_type {rp.get('rope_type')!r}: the RoPE check implements default RoPE only; "
                               "set theorem.check_rope: false")
    return float(rp.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def extract_head(model, layer: int, head: int) -> Head:
    """(layer, query head) -> `Head` with W_q, W_k, W_v as (d, d_h) float64 copies.

    ``q_proj.weight`` is (n_heads d_h, d): rows ``h d_h .. (h+1) d_h`` are head
    ``h``; k/v use kv head ``h // (n_heads / n_kv_heads)`` (GQA).
    """
    cfg = model.config
    attn = _decoder_layers(model)[layer].self_attn
    n_heads = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    if not 0 <= head < n_heads:
        raise MagicTokensError(f"theorem.heads: head {head} does not exist (layer {layer} has {n_heads})")
    if any(getattr(p, "bias", None) is not None for p in (attn.q_proj, attn.k_proj, attn.v_proj)):
        raise MagicTokensError("the theorem is for bias-free projections; this model has q/k/v biases")
    kv = head // (n_heads // n_kv)
    with torch.no_grad():  # copies: the model's own parameters keep requires_grad (see models.py)
        W = lambda proj, h: proj.weight[h * dh:(h + 1) * dh].detach().to("cpu", DTYPE).T.contiguous()  # noqa: E731
        return Head(layer, head, kv, W(attn.q_proj, head), W(attn.k_proj, kv), W(attn.v_proj, kv),
                    rope_theta_of(cfg))


def layer_inputs(model, x0_ids: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
    """Pre-attention inputs ``RMSNorm(h_L)`` of each layer: {L: (n, m, d) float64}.

    ``hidden_states[L]`` is the residual stream entering layer ``L``; the
    layer's ``input_layernorm`` (with its weight) is what q/k/v_proj read.
    """
    blocks = _decoder_layers(model)
    with torch.inference_mode():
        out = model(input_ids=x0_ids.to(model.device), output_hidden_states=True)
        return {L: blocks[L].input_layernorm(out.hidden_states[L]).to("cpu", DTYPE).clone() for L in layers}


def rmsnorm_ceiling(model, layer: int) -> float:
    """``sqrt(d) max|g|``: no output of that layer's RMSNorm is longer."""
    g = _decoder_layers(model)[layer].input_layernorm.weight.detach().to("cpu", DTYPE)
    return float(g.abs().max() * math.sqrt(g.numel()))


def rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """HF-Llama default RoPE (rotate_half convention). x (..., n, d_h), pos (n,)."""
    dh = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, dh, 2, dtype=DTYPE) / dh)          # (d_h/2,)
    ang = pos.to(DTYPE)[:, None] * inv[None]                                 # (n, d_h/2)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    rot = torch.cat([-x[..., dh // 2:], x[..., :dh // 2]], -1)
    return x * cos + rot * sin


def uncontrolled(X0: torch.Tensor, head: Head, row: int = -1, rope_on: bool = False):
    """Head output of row `row` on X0 alone. X0 (B, m, d) -> (y0 (B, d_h), log Z (B,)).

    log Z = logsumexp_j s_ij, the log attention row sum over x0 (j <= i).
    """
    m = X0.shape[-2]
    i = row % m
    q = X0[..., i:i + 1, :] @ head.W_q                     # (B, 1, d_h)
    kx, vx = X0[..., :i + 1, :] @ head.W_k, X0[..., :i + 1, :] @ head.W_v   # (B, i+1, d_h)
    if rope_on:
        q = rope(q, torch.tensor([i]), head.rope_theta)
        kx = rope(kx, torch.arange(i + 1), head.rope_theta)
    s = (q @ kx.transpose(-1, -2)).squeeze(-2) / math.sqrt(head.d_head)   # (B, i+1)
    logZ = torch.logsumexp(s, -1)
    y0 = (torch.softmax(s, -1).unsqueeze(-2) @ vx).squeeze(-2)
    return y0, logZ


def controlled(U: torch.Tensor, X0: torch.Tensor, head: Head, row: int = -1, rope_on: bool = False):
    """Head output of x0 row `row` on [U; X0] (causal): every x0 row sees all of U.

    U (B, R, k, d), X0 (B, m, d) -> (y (B, R, d_h), a (B, R) the attention mass on U).
    Positions: U at 0..k-1, X0 at k..k+m-1 (only used with RoPE).
    """
    k, m = U.shape[-2], X0.shape[-2]
    i = row % m
    q = X0[:, None, i:i + 1, :] @ head.W_q                 # (B, 1, 1, d_h)
    kx, vx = X0[:, None, :i + 1, :] @ head.W_k, X0[:, None, :i + 1, :] @ head.W_v  # (B, 1, i+1, d_h)
    ku, vu = U @ head.W_k, U @ head.W_v                     # (B, R, k, d_h)
    if rope_on:
        q = rope(q, torch.tensor([k + i]), head.rope_theta)
        kx = rope(kx, k + torch.arange(i + 1), head.rope_theta)
        ku = rope(ku, torch.arange(k), head.rope_theta)
    scale = math.sqrt(head.d_head)
    su = (q @ ku.transpose(-1, -2)).squeeze(-2) / scale     # (B, R, k)
    sx = (q @ kx.transpose(-1, -2)).squeeze(-2) / scale     # (B, 1, i+1)
    s = torch.cat([su, sx.expand(*su.shape[:-1], -1)], -1)  # (B, R, k+i+1)
    w = torch.softmax(s, -1)
    v = torch.cat([vu, vx.expand(*vu.shape[:-2], -1, -1)], -2)   # (B, R, k+i+1, d_h)
    y = (w.unsqueeze(-2) @ v).squeeze(-2)
    return y, w[..., :k].sum(-1)


def orthogonal_part(y: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """||y - proj_{y0} y||. y (B, R, d_h), y0 (B, d_h) -> (B, R)."""
    e = y0 / y0.norm(dim=-1, keepdim=True)
    e = e.unsqueeze(-2)                                     # (B, 1, d_h)
    return (y - (y * e).sum(-1, keepdim=True) * e).norm(dim=-1)


def parallel_scale(y: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """gamma with y = gamma y0 + y_perp. -> (B, R)."""
    return (y * y0.unsqueeze(-2)).sum(-1) / (y0 * y0).sum(-1, keepdim=True)


@dataclass
class Bound:
    orth: torch.Tensor        # bound on ||y_i_perp||
    a_min: torch.Tensor       # admissible control attention mass
    a_max: torch.Tensor
    gamma_min: torch.Tensor   # admissible parallel scaling of y0_i
    gamma_max: torch.Tensor


def reachability_bound(k: int, sigma_q: float, sigma_k: float, sigma_v: float, m_u: float,
                       x_max, log_row_sum, d_head: int, y0_norm=None) -> Bound:
    """The corrected theorem (module docstring) for output row i, k control tokens.

    x_max = max_j ||x_j|| over X0, log_row_sum = log Z_i = logsumexp_{j<=i} s_ij
    (tensors broadcast: one value per x0). Computed in log space: E may be
    far beyond float range. y0_norm = ||y0_i|| (for the gamma range; else nan).
    """
    x_max = torch.as_tensor(x_max, dtype=DTYPE)
    logZ = torch.as_tensor(log_row_sum, dtype=DTYPE)
    logE = sigma_q * sigma_k * m_u * x_max / math.sqrt(d_head)
    a_max = torch.sigmoid(math.log(k) + logE - logZ)        # kE / (Z + kE)
    a_min = torch.sigmoid(math.log(k) - logE - logZ)        # k/E / (Z + k/E)
    if y0_norm is None:
        g_lo = g_hi = torch.full_like(a_max, float("nan"))
    else:
        rho = sigma_v * m_u / torch.as_tensor(y0_norm, dtype=DTYPE)
        g_lo = 1 - a_max * (1 + rho)
        g_hi = 1 + torch.where(rho >= 1, a_max, a_min) * (rho - 1)
    return Bound(a_max * sigma_v * m_u, a_min, a_max, g_lo, g_hi)
