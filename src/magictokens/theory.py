"""Paper A's self-attention reachability theorem, corrected and checked numerically.

One attention head with query/key/value maps ``W_q, W_k, W_v`` (each ``d x d_h``)
reads ``X = [U; X0]``: ``k`` control rows ``U`` (``k x d``, ``||u_j|| <= M_u``)
before ``m`` state rows ``X0`` (``m x d``), causal mask, scores scaled by
``1/sqrt(d_h)``. Output row ``i`` of the state part (``i`` indexes ``X0``)::

    s_ij = (x_i W_q)(x_j W_k)^T / sqrt(d_h)        j <= i   (state keys)
    c_ij = (x_i W_q)(u_j W_k)^T / sqrt(d_h)        j = 1..k (control keys)
    Z_i  = sum_{j<=i} exp(s_ij)                    the attention row sum over x0
    C_i  = sum_j exp(c_ij)
    y_i  = (Z_i y0_i + sum_j exp(c_ij) u_j W_v) / (Z_i + C_i)
         = (1 - a_i) y0_i + a_i ubar_i,   a_i = C_i / (Z_i + C_i)

where ``y0_i`` is the head's output on ``X0`` alone (the *uncontrolled*
output) and ``ubar_i`` is a convex mix of the control values.

**Theorem (corrected).** Let ``sigma_q, sigma_k, sigma_v`` be the largest
singular values of ``W_q, W_k, W_v``, ``M_x = max_j ||x_j||`` over the rows
of ``X0``, ``E = exp(sigma_q sigma_k M_u M_x / sqrt(d_h))``. For every ``U``
with ``||u_j|| <= M_u``:

1. the control mass obeys ``a_min <= a_i <= a_max`` with
   ``a_max = k E / (Z_i + k E)`` and ``a_min = k E^-1 / (Z_i + k E^-1)``;
2. the part of ``y_i`` orthogonal to ``y0_i`` obeys
   ``||y_i_perp|| <= a_max sigma_v M_u``   (sigma_v, not sigma_q);
3. the parallel part is ``gamma y0_i`` with ``gamma`` in
   ``[1 - a_max (1 + rho), 1 + a* (rho - 1)]``, ``rho = sigma_v M_u / ||y0_i||``,
   ``a* = a_max if rho >= 1 else a_min``.

Hence a target row ``y*`` is excluded from the reachable set if
``||y* - (1 - a) y0_i|| > a sigma_v M_u`` for *every* admissible scaling
``a`` in ``[a_min, a_max]``; in particular if ``||y*_perp|| > a_max sigma_v M_u``.

*Proof sketch.* ``|c_ij| <= ||x_i W_q|| ||u_j W_k|| / sqrt(d_h) <= sigma_q M_x
sigma_k M_u / sqrt(d_h)``, so ``k/E <= C_i <= k E``, and ``a = C/(Z + C)`` is
increasing in ``C`` (1). ``||ubar_i|| <= max_j ||u_j W_v|| <= sigma_v M_u``
because ``ubar_i`` is a convex mix of the ``u_j W_v`` (this is where the
printed statement has sigma_q); ``y0_i`` has no orthogonal part, so
``y_i_perp = a_i ubar_i_perp`` (2). ``gamma = 1 - a + a t`` with
``t = <ubar, y0>/||y0||^2`` in ``[-rho, rho]``; extremise over ``a`` (3).
(The paper's looser ``k E / Z_i`` drops the ``+ k E`` of the denominator.)

RoPE rotates ``q`` and every key by position-dependent rotations: norms,
hence every step above, are unchanged, and state-to-state scores depend on
relative positions only, so shifting ``X0`` by ``k`` leaves ``Z_i`` and
``y0_i`` as they were: the theorem holds verbatim with RoPE (checked below
with ``rope=True``).

What `run` checks on a Hugging Face Llama (SmolLM2): for each chosen
(layer, head) the pre-attention inputs ``X0 = RMSNorm(h_layer)`` of Wikitext
spans (RMSNorm weight included), ``W_q, W_k, W_v`` = that head's slices of
``q_proj, k_proj, v_proj`` (GQA: query head ``h`` uses kv head
``h // (n_heads / n_kv_heads)``), the output row ``i = m - 1`` (the row that
predicts the next token), and continuous controls ``U`` in the ball
``||u_j|| <= M_u``; ``o_proj`` is left out (a fixed linear map after the head).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch

from .errors import MagicTokensError
from .fields import Count, Flag, Int, Positive, PositiveReal, params

DTYPE = torch.float64   # the check runs in float64: bound and achieved differ by < 1e-12 of rounding
VIOLATION_RTOL = 1e-9   # achieved > bound * (1 + rtol) counts as a violation


@params
@dataclass
class TheoremConfig:
    layers: list[Int] = field(default_factory=lambda: [0, 7, 15, 23, 29])  # negative = from the end
    heads: list[Count] | None = None    # query heads; None = all of them
    ks: list[Positive] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    n_x0: Positive = 4                       # Wikitext spans
    x0_len: Positive = 16                    # m = |x0| tokens
    m_u: Literal["x0_max", "rmsnorm"] | PositiveReal = "x0_max"   # x0_max: max ||x_j|| of the layer's inputs over all spans;
                                        # rmsnorm: sqrt(d) max|g| (any RMSNorm output); or a number
    steps: Count = 150                    # projected Adam steps per restart
    restarts: Positive = 6                   # 3 structured + random starts
    lr: PositiveReal = 0.1                     # step size in units of M_u (per-coordinate: / sqrt(d))
    n_random: Count = 64                  # random U (on the sphere ||u_j|| = M_u) per (head, k, x0)
    rope: Flag = False                  # headline check: the pre-RoPE linear head (as the theorem)
    check_rope: Flag = True             # also run every (head, k) with RoPE
    plot_layers: list[Int] | None = None  # bound-vs-k panels; None = all layers (max 4 shown)
    plot_heads: list[Count] | None = None   # None = first 3 heads

    def __post_init__(self):
        if not self.ks or any(int(k) < 1 for k in self.ks):
            raise MagicTokensError(f"theorem.ks must be positive integers, got {self.ks}")
        if int(self.x0_len) < 1 or int(self.n_x0) < 1:
            raise MagicTokensError(f"theorem.x0_len and n_x0 must be >= 1, got {self.x0_len}, {self.n_x0}")
        if not (isinstance(self.m_u, (int, float)) or self.m_u in ("x0_max", "rmsnorm")):
            raise MagicTokensError(f"theorem.m_u must be 'x0_max', 'rmsnorm' or a number, got {self.m_u!r}")
        if int(self.restarts) < 1 or int(self.steps) < 0:
            raise MagicTokensError("theorem.restarts must be >= 1 and steps >= 0")


# ----------------------------------------------------------------------------- heads


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


# ----------------------------------------------------------------------------- one head


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


def random_controls(shape, m_u: float, generator: torch.Generator, inside: bool = False) -> torch.Tensor:
    """U of `shape` (..., k, d) with ||u_j|| = M_u (or uniform radius in [0, M_u] if inside)."""
    U = torch.randn(shape, generator=generator, dtype=DTYPE)
    U = U / U.norm(dim=-1, keepdim=True) * m_u
    if inside:
        U = U * torch.rand(shape[:-1] + (1,), generator=generator, dtype=DTYPE)
    return U


@contextlib.contextmanager
def single_thread():
    """torch intra-op threads = 1 inside, restored after.

    The check is thousands of tiny float64 ops: threads only add sync overhead
    (measured 30x slower with 2 threads on a busy 2-core CPU).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _project(U: torch.Tensor, m_u: float) -> torch.Tensor:
    n = U.norm(dim=-1, keepdim=True)
    return U * torch.clamp(m_u / n.clamp_min(1e-300), max=1.0)


@dataclass
class ControlResult:
    best: torch.Tensor            # (B,) best ||y_perp|| over restarts and steps
    best_U: torch.Tensor          # (B, k, d)
    per_restart: torch.Tensor     # (B, R) best of each restart (each is one trial)
    history: torch.Tensor         # (steps+1, B) best so far, per step


def _structured_starts(X0, y0, head: Head, k: int, m_u: float, row: int) -> torch.Tensor:
    """Three starts per x0 (B, 3, k, d): u along the max-score direction W_k (x_i W_q)^T;
    along the top left-singular vector of W_v P (P projects out y0) signed for a
    positive score; and their normalised sum."""
    q = X0[:, row % X0.shape[-2]] @ head.W_q                # (B, d_h)
    s_dir = q @ head.W_k.T                                  # (B, d): score of u is <u, s_dir>
    s_dir = s_dir / s_dir.norm(dim=-1, keepdim=True)
    e = y0 / y0.norm(dim=-1, keepdim=True)                  # (B, d_h)
    P = torch.eye(head.d_head, dtype=DTYPE) - e[:, :, None] * e[:, None, :]   # (B, d_h, d_h)
    Ls, _, _ = torch.linalg.svd(head.W_v @ P, full_matrices=False)            # (B, d, d_h)
    v_dir = Ls[:, :, 0]                                     # argmax_{|u|=1} ||u W_v P||
    v_dir = v_dir * torch.sign((v_dir * s_dir).sum(-1, keepdim=True) + 1e-300)
    mix = s_dir + v_dir
    mix = mix / mix.norm(dim=-1, keepdim=True)
    starts = torch.stack([s_dir, v_dir, mix], 1) * m_u      # (B, 3, d)
    return starts[:, :, None, :].expand(-1, -1, k, -1).clone()


def optimise_control(X0: torch.Tensor, head: Head, k: int, m_u: float, *, steps: int = 150,
                     restarts: int = 6, lr: float = 0.1, generator: torch.Generator | None = None,
                     row: int = -1, rope_on: bool = False) -> ControlResult:
    """Projected gradient ascent (Adam + projection on ||u_j|| <= M_u) of ||y_i_perp||.

    X0 (B, m, d): one independent problem per x0, `restarts` starts each
    (3 structured, the rest random on the sphere, drawn from `generator`);
    the step is ``lr M_u / sqrt(d)`` per coordinate, cosine-decayed. Every
    iterate is feasible, so the best value seen is an achieved value.
    """
    with single_thread():
        return _optimise(X0, head, k, m_u, steps, restarts, lr, generator or torch.Generator().manual_seed(0),
                         row, rope_on)


def _optimise(X0, head, k, m_u, steps, restarts, lr, g, row, rope_on) -> ControlResult:
    B, m, d = X0.shape
    y0, _ = uncontrolled(X0, head, row, rope_on)
    starts = _structured_starts(X0, y0, head, k, m_u, row)[:, :restarts]
    n_rand = restarts - starts.shape[1]
    if n_rand > 0:
        starts = torch.cat([starts, random_controls((B, n_rand, k, d), m_u, g)], 1)
    # a little noise so k identical structured rows can split up
    U = _project(starts + 1e-3 * m_u / math.sqrt(d) * torch.randn(starts.shape, generator=g, dtype=DTYPE), m_u)
    U.requires_grad_(True)  # our own tensor: gradients are taken w.r.t. U only
    opt = torch.optim.Adam([U], lr=lr * m_u / math.sqrt(d))
    best_r = torch.full((B, U.shape[1]), -1.0, dtype=DTYPE)
    best_U = U.detach().clone()
    hist = []
    for t in range(steps + 1):
        y, _ = controlled(U, X0, head, row, rope_on)
        val = orthogonal_part(y, y0)                        # (B, R)
        with torch.no_grad():
            better = val > best_r
            best_r = torch.where(better, val, best_r)
            best_U[better] = U.detach()[better]
            hist.append(best_r.max(1).values)
        if t == steps:
            break
        for group in opt.param_groups:                      # cosine decay to 5% of lr
            group["lr"] = lr * m_u / math.sqrt(d) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t / steps)))
        opt.zero_grad()
        (-val.sum()).backward()                             # problems are independent: sum is separable
        opt.step()
        with torch.no_grad():
            U.copy_(_project(U, m_u))
    best, idx = best_r.max(1)
    return ControlResult(best, best_U[torch.arange(B), idx], best_r, torch.stack(hist))


# ----------------------------------------------------------------------------- the check


@dataclass
class Result:
    rows: list[dict]              # one per (layer, head, k, x0): bound, achieved, ratio, ...
    heads: list[dict]             # one per (layer, head): sigmas, M_u
    violations: int               # (head, k, x0, trial) with achieved > bound (headline setting)
    n_trials: int
    range_violations: int         # trials whose attention mass a or parallel scale gamma left its range
    rope: dict | None = None      # same check with RoPE: {"violations", "n_trials", "rows"}
    config: dict = field(default_factory=dict)

    def summary(self, rows: list[dict] | None = None) -> dict:
        """Per layer: max / median tightness ratio; per k: median ratio."""
        rows = self.rows if rows is None else rows
        out: dict = {"per_layer": {}, "per_k": {}}
        for L in sorted({r["layer"] for r in rows}):
            rs = np.array([r["ratio"] for r in rows if r["layer"] == L])
            out["per_layer"][str(L)] = {"max_ratio": float(rs.max()), "median_ratio": float(np.median(rs))}
        for k in sorted({r["k"] for r in rows}):
            rs = np.array([r["ratio"] for r in rows if r["k"] == k])
            out["per_k"][str(k)] = {"max_ratio": float(rs.max()), "median_ratio": float(np.median(rs))}
        return out

    def sigma_q_slip(self) -> dict:
        """The printed slip: the same bound with sigma_q in place of sigma_v.

        Counts rows whose best achieved value exceeds ``a_max sigma_q M_u``:
        any count > 0 shows the printed form is not a valid bound.
        """
        info = {(h["layer"], h["head"]): h for h in self.heads}
        bad = [r for r in self.rows
               if r["achieved"] > r["a_max"] * info[r["layer"], r["head"]]["sigma_q"]
               * info[r["layer"], r["head"]]["M_u"] * (1 + VIOLATION_RTOL)]
        return {"violations": len(bad), "n_rows": len(self.rows),
                "heads": sorted({(r["layer"], r["head"]) for r in bad})}


def sample_x0(tokenizer, text: str, n: int, length: int, seed: int) -> torch.Tensor:
    """n seeded random Wikitext spans of `length` tokens -> (n, length) ids."""
    ids = tokenizer(text[:2_000_000], add_special_tokens=False).input_ids
    if len(ids) < length + 1:
        raise MagicTokensError(f"Wikitext holds {len(ids)} tokens, too few for |x0| = {length}: run `magictokens data`")
    starts = np.random.default_rng(seed).choice(len(ids) - length, size=n, replace=False)
    return torch.tensor([ids[s:s + length] for s in sorted(int(x) for x in starts)])


def check_head(X0: torch.Tensor, head: Head, ks, m_u: float, config: TheoremConfig,
               generator: torch.Generator, rope_on: bool = False) -> tuple[list[dict], int, int, int]:
    """All k for one head: bound vs optimised and random U.

    -> (rows, violations of the orthogonal bound (per trial), trials,
    violations of the a / gamma ranges (per trial)).
    """
    row = -1
    y0, logZ = uncontrolled(X0, head, row, rope_on)
    x_max = X0.norm(dim=-1).max(-1).values                  # (B,) max |x0| per span
    sq, sk, sv = head.sigmas()
    rows, viol, trials, range_viol = [], 0, 0, 0
    for k in ks:
        b = reachability_bound(k, sq, sk, sv, m_u, x_max, logZ, head.d_head, y0.norm(dim=-1))
        opt = optimise_control(X0, head, k, m_u, steps=config.steps, restarts=config.restarts, lr=config.lr,
                               generator=generator, row=row, rope_on=rope_on)
        with torch.no_grad():
            Ur = random_controls((X0.shape[0], config.n_random, k, X0.shape[-1]), m_u, generator)
            yr, ar = controlled(Ur, X0, head, row, rope_on)
            rand = orthogonal_part(yr, y0)                   # (B, n_random)
            gam = parallel_scale(yr, y0)
            yb, ab = controlled(opt.best_U[:, None], X0, head, row, rope_on)
            gb = parallel_scale(yb, y0)
        lim = b.orth[:, None] * (1 + VIOLATION_RTOL)
        viol += int((opt.per_restart > lim).sum() + (rand > lim).sum())
        trials += opt.per_restart.numel() + rand.numel()
        # parts 1 and 3 of the theorem: attention mass and parallel scaling inside their ranges
        tol = VIOLATION_RTOL * (1 + b.gamma_max.abs() + b.gamma_min.abs())[:, None]
        for a_, g_ in ((ar, gam), (ab, gb)):
            range_viol += int(((a_ > b.a_max[:, None] + 1e-12) | (a_ < b.a_min[:, None] - 1e-12)).sum())
            range_viol += int(((g_ > b.gamma_max[:, None] + tol) | (g_ < b.gamma_min[:, None] - tol)).sum())
        for j in range(X0.shape[0]):
            rows.append({
                "layer": head.layer, "head": head.head, "kv_head": head.kv_head, "k": int(k), "x0": j,
                "bound": float(b.orth[j]), "achieved": float(opt.best[j]), "ratio": float(opt.best[j] / b.orth[j]),
                "random_best": float(rand[j].max()), "a_max": float(b.a_max[j]), "a_min": float(b.a_min[j]),
                "a_achieved": float(ab[j, 0]), "gamma_min": float(b.gamma_min[j]), "gamma_max": float(b.gamma_max[j]),
                "gamma_random": [float(gam[j].min()), float(gam[j].max())],
                "a_random": [float(ar[j].min()), float(ar[j].max())],
                "y0_norm": float(y0[j].norm()), "log_row_sum": float(logZ[j]), "x_max": float(x_max[j]),
            })
    return rows, viol, trials, range_viol


def run(model, x0_batch: torch.Tensor, config: TheoremConfig | None = None, seed: int = 0,
        progress: bool = False) -> Result:
    """Check the corrected theorem on every configured (layer, head) of `model`.

    x0_batch (n, m) token ids. For each layer: X0 = RMSNorm(h_layer) of the
    spans, M_u from `config.m_u`; for each head and k: the bound per span vs
    the best ||y_perp|| of `optimise_control` and of `n_random` random U.
    """
    with single_thread():
        return _run(model, x0_batch, config or TheoremConfig(), seed, progress)


def _run(model, x0_batch, config: TheoremConfig, seed: int, progress: bool) -> Result:
    layers = resolve_layers(model, config.layers)
    n_heads = model.config.num_attention_heads
    heads = list(range(n_heads)) if config.heads is None else [int(h) for h in config.heads]
    X = layer_inputs(model, x0_batch, layers)
    g = torch.Generator().manual_seed(seed)
    rows, info, viol, trials, range_viol = [], [], 0, 0, 0
    rrows, rviol, rtrials, rrange = [], 0, 0, 0
    todo = [(L, h) for L in layers for h in heads]
    it = todo
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(todo, desc="heads")
    for L, h in it:
        head = extract_head(model, L, h)
        X0 = X[L]
        if config.m_u == "x0_max":
            m_u = float(X0.norm(dim=-1).max())
        elif config.m_u == "rmsnorm":
            m_u = rmsnorm_ceiling(model, L)
        else:
            m_u = float(config.m_u)
        sq, sk, sv = head.sigmas()
        info.append({"layer": L, "head": h, "kv_head": head.kv_head, "sigma_q": sq, "sigma_k": sk,
                     "sigma_v": sv, "M_u": m_u, "d_head": head.d_head})
        r, v, t, rv = check_head(X0, head, config.ks, m_u, config, g, rope_on=config.rope)
        rows += r; viol += v; trials += t; range_viol += rv  # noqa: E702
        if config.check_rope and not config.rope:
            r, v, t, rv = check_head(X0, head, config.ks, m_u, config, g, rope_on=True)
            rrows += r; rviol += v; rtrials += t; rrange += rv  # noqa: E702
    rope_part = ({"violations": rviol, "n_trials": rtrials, "range_violations": rrange, "rows": rrows}
                 if rrows else None)
    return Result(rows, info, viol, trials, range_viol, rope_part, asdict(config))
