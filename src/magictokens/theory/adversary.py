"""The adversary: continuous controls U in the ball ||u_j|| <= M_u that maximise
||y_perp|| of one head's output, by projected Adam with structured and random
restarts (explicit `torch.Generator`), plus random controls on the sphere."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models import torch_threads
from .head import DTYPE, Head, controlled, orthogonal_part, uncontrolled

def random_controls(shape, m_u: float, generator: torch.Generator, inside: bool = False) -> torch.Tensor:
    """U of `shape` (..., k, d) with ||u_j|| = M_u (or uniform radius in [0, M_u] if inside)."""
    U = torch.randn(shape, generator=generator, dtype=DTYPE)
    U = U / U.norm(dim=-1, keepdim=True) * m_u
    if inside:
        U = U * torch.rand(shape[:-1] + (1,), generator=generator, dtype=DTYPE)
    return U


def single_thread():
    """torch intra-op threads = 1 inside, restored after.

    The check is thousands of tiny float64 ops: threads only add sync overhead
    (measured 30x slower with 2 threads on a busy 2-core CPU).
    """
    return torch_threads(1)


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
