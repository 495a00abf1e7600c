"""Paper A's self-attention theorem (corrected): the bound holds, can fail, and matches hand values."""
import math

import pytest
import torch

from magictokens import theory as T

pytestmark = pytest.mark.unit

D, DH, M = 12, 4, 5


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny float64 ops: threads only add overhead (30x on a busy 2-core CPU)."""
    with T.single_thread():
        yield


def random_head(seed: int, scale: float = 1.0, d: int = D, dh: int = DH) -> T.Head:
    g = torch.Generator().manual_seed(seed)
    W = lambda: torch.randn(d, dh, generator=g, dtype=T.DTYPE) * scale / math.sqrt(d)  # noqa: E731
    return T.Head(0, 0, 0, W(), W(), W(), rope_theta=10000.0)


def random_x0(seed: int, B: int = 3, m: int = M, d: int = D) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(B, m, d, generator=g, dtype=T.DTYPE)


def bound_for(head, X0, k, m_u, rope_on=False, sigmas=None):
    y0, logZ = T.uncontrolled(X0, head, -1, rope_on)
    sq, sk, sv = sigmas or head.sigmas()
    return T.reachability_bound(k, sq, sk, sv, m_u, X0.norm(dim=-1).max(-1).values, logZ, head.d_head,
                                y0.norm(dim=-1)), y0


def trials(head, X0, k, m_u, g, rope_on=False, n_random=200, steps=60, restarts=4):
    """||y_perp||, a, gamma of random U (sphere and ball) and the optimiser's best U: (B, n)."""
    Us = [T.random_controls((X0.shape[0], n_random, k, X0.shape[-1]), m_u, g),
          T.random_controls((X0.shape[0], n_random, k, X0.shape[-1]), m_u, g, inside=True)]
    opt = T.optimise_control(X0, head, k, m_u, steps=steps, restarts=restarts, generator=g, rope_on=rope_on)
    Us.append(opt.best_U[:, None])
    y0, _ = T.uncontrolled(X0, head, -1, rope_on)
    with torch.no_grad():
        out = [T.controlled(U, X0, head, -1, rope_on) for U in Us]
    orth = torch.cat([T.orthogonal_part(y, y0) for y, _ in out], 1)
    a = torch.cat([a for _, a in out], 1)
    gam = torch.cat([T.parallel_scale(y, y0) for y, _ in out], 1)
    return orth, a, gam, opt


@pytest.mark.parametrize("rope_on", [False, True])
@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0])   # small scale: a_max < 1, the k-dependence is live
def test_bound_holds_on_random_heads(scale, rope_on):
    g = torch.Generator().manual_seed(0)
    n = 0
    for seed in range(4):
        head, X0 = random_head(seed, scale), random_x0(seed)
        m_u = float(X0.norm(dim=-1).max()) * (0.5 + seed / 4)
        for k in (1, 3, 8):
            b, _ = bound_for(head, X0, k, m_u, rope_on)
            orth, a, gam, opt = trials(head, X0, k, m_u, g, rope_on)
            n += orth.numel()
            assert (orth <= b.orth[:, None] * (1 + 1e-9)).all(), (seed, k, (orth.max(1).values / b.orth))
            assert (opt.per_restart <= b.orth[:, None] * (1 + 1e-9)).all()
            assert (a <= b.a_max[:, None] + 1e-12).all() and (a >= b.a_min[:, None] - 1e-12).all()
            tol = 1e-9 * (1 + b.gamma_max.abs() + b.gamma_min.abs())[:, None]
            assert (gam <= b.gamma_max[:, None] + tol).all() and (gam >= b.gamma_min[:, None] - tol).all()
            # every iterate is feasible and the optimiser beats random search
            assert (opt.best_U.norm(dim=-1) <= m_u * (1 + 1e-12)).all()
            assert (opt.best >= orth[:, :-1].max(1).values - 1e-12).all()
    assert n > 10_000


def tight_head(c: float = 1.0, sv: float = 2.0) -> tuple[T.Head, torch.Tensor]:
    """d = d_h = 3 head where the bound is attained exactly by u = e2 (see test below).

    x0 = e1; W_q: e1 -> c f1; W_k: e2 -> c f1 (x0's own key is 0, so Z = 1);
    W_v: e1 -> f1, e2 -> sv f2. sigma = (c, c, sv); u = e2 has the largest
    possible score c^2/sqrt(3) and a value sv f2 orthogonal to y0 = f1.
    """
    z = torch.zeros(3, 3, dtype=T.DTYPE)
    Wq, Wk, Wv = z.clone(), z.clone(), z.clone()
    Wq[0, 0], Wk[1, 0], Wv[0, 0], Wv[1, 1] = c, c, 1.0, sv
    return T.Head(0, 0, 0, Wq, Wk, Wv, rope_theta=10000.0), torch.tensor([[[1.0, 0, 0]]], dtype=T.DTYPE)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_bound_is_attained_on_a_tight_head(k):
    head, X0 = tight_head()
    b, _ = bound_for(head, X0, k, 1.0)
    a = k * math.exp(1 / math.sqrt(3)) / (1 + k * math.exp(1 / math.sqrt(3)))
    assert float(b.a_max) == pytest.approx(a, rel=1e-12)
    assert float(b.orth) == pytest.approx(2 * a, rel=1e-12)
    opt = T.optimise_control(X0, head, k, 1.0, steps=50, restarts=4, generator=torch.Generator().manual_seed(0))
    assert float(opt.best) / float(b.orth) > 0.999          # the optimiser comes close ...
    assert float(opt.best) <= float(b.orth) * (1 + 1e-9)    # ... and never beyond


def test_understated_singular_value_makes_the_check_fail():
    """The check can fail: understate sigma_v (or sigma_q sigma_k) and optimised U exceed the 'bound'."""
    head, X0 = tight_head(c=1.0, sv=2.0)
    opt = T.optimise_control(X0, head, 1, 1.0, steps=50, restarts=4, generator=torch.Generator().manual_seed(0))
    sq, sk, sv = head.sigmas()
    b_true, _ = bound_for(head, X0, 1, 1.0)
    b_low_v, _ = bound_for(head, X0, 1, 1.0, sigmas=(sq, sk, 0.9 * sv))
    b_low_qk, _ = bound_for(head, X0, 1, 1.0, sigmas=(0.7 * sq, sk, sv))
    b_slip, _ = bound_for(head, X0, 1, 1.0, sigmas=(sq, sk, sq))   # the printed sigma_q-for-sigma_v
    assert float(opt.best) <= float(b_true.orth) * (1 + 1e-9)
    assert float(opt.best) > float(b_low_v.orth) * 1.05
    assert float(opt.best) > float(b_low_qk.orth) * 1.02
    assert float(opt.best) > float(b_slip.orth) * 1.5
    # and on random heads: the optimiser exceeds the bound with sigma_v understated by 2x
    g = torch.Generator().manual_seed(1)
    head, X0 = random_head(3, scale=3.0), random_x0(3)
    m_u = float(X0.norm(dim=-1).max())
    sq, sk, sv = head.sigmas()
    b_true, _ = bound_for(head, X0, 4, m_u)
    b_low, _ = bound_for(head, X0, 4, m_u, sigmas=(sq, sk, 0.5 * sv))
    opt = T.optimise_control(X0, head, 4, m_u, steps=80, restarts=6, generator=g)
    assert (opt.best <= b_true.orth * (1 + 1e-9)).all()
    assert (opt.best > b_low.orth).any()


def test_hand_computed_2x2():
    """d = d_h = 2, W_q = diag(2, 1), W_k = I, W_v = diag(1, 3), x0 = [[1, 0]], M_u = 1.

    q = [2, 0], x0's key [1, 0]: s = 2/sqrt2 = sqrt2, Z = e^sqrt2, y0 = [1, 0].
    sigma = (2, 1, 3), log E = 2*1*1*1/sqrt2 = sqrt2 = log Z.
    k = 1: a_max = 1/2, bound = 3/2; k = 2: a_max = 2/3, bound = 2.
    a_min(k=1) = e^-sqrt2 / (e^sqrt2 + e^-sqrt2); rho = 3: gamma in [1 - 4 a_max, 1 + 2 a_max].
    u = [0, 1]: score 0, a = 1/(e^sqrt2 + 1), y = (e^sqrt2 [1, 0] + [0, 3]) / (e^sqrt2 + 1),
    ||y_perp|| = 3/(e^sqrt2 + 1). u = [1, 0]: a = 1/2, y = [1, 0]. u = [-1, 0]: gamma = 1 - 2a.
    """
    Wq = torch.tensor([[2.0, 0], [0, 1]], dtype=T.DTYPE)
    Wv = torch.tensor([[1.0, 0], [0, 3]], dtype=T.DTYPE)
    head = T.Head(0, 0, 0, Wq, torch.eye(2, dtype=T.DTYPE), Wv, rope_theta=10000.0)
    X0 = torch.tensor([[[1.0, 0]]], dtype=T.DTYPE)
    r2, e = math.sqrt(2), math.exp(math.sqrt(2))
    assert head.sigmas() == pytest.approx((2, 1, 3))
    y0, logZ = T.uncontrolled(X0, head)
    assert y0[0].tolist() == pytest.approx([1, 0]) and float(logZ) == pytest.approx(r2)
    b1 = T.reachability_bound(1, 2, 1, 3, 1.0, 1.0, r2, 2, 1.0)
    assert (float(b1.a_max), float(b1.orth)) == pytest.approx((0.5, 1.5))
    assert float(b1.a_min) == pytest.approx((1 / e) / (e + 1 / e))
    assert (float(b1.gamma_min), float(b1.gamma_max)) == pytest.approx((-1.0, 2.0))
    b2 = T.reachability_bound(2, 2, 1, 3, 1.0, 1.0, r2, 2, 1.0)
    assert (float(b2.a_max), float(b2.orth)) == pytest.approx((2 / 3, 2.0))
    U = torch.tensor([[[[0.0, 1]], [[1.0, 0]], [[-1.0, 0]]]], dtype=T.DTYPE)   # (B=1, R=3, k=1, d=2)
    y, a = T.controlled(U, X0, head)
    assert y[0, 0].tolist() == pytest.approx([e / (e + 1), 3 / (e + 1)])
    assert T.orthogonal_part(y, y0)[0].tolist() == pytest.approx([3 / (e + 1), 0, 0], abs=1e-12)
    a_neg = (1 / e) / (e + 1 / e)
    assert a[0].tolist() == pytest.approx([1 / (e + 1), 0.5, a_neg])
    assert T.parallel_scale(y, y0)[0].tolist() == pytest.approx([e / (e + 1), 1.0, 1 - 2 * a_neg])
    # the optimiser finds the 1-D optimum over the unit circle: max_t 3|sin t| a(t)
    t = torch.linspace(0, math.pi, 200_001, dtype=T.DTYPE)
    at = torch.exp(r2 * t.cos()) / (e + torch.exp(r2 * t.cos()))
    best = float((3 * t.sin() * at).max())
    opt = T.optimise_control(X0, head, 1, 1.0, steps=200, restarts=4, generator=torch.Generator().manual_seed(0))
    assert float(opt.best) == pytest.approx(best, rel=1e-4)
    assert float(opt.best) <= 1.5


def test_controlled_matches_the_hf_attention_with_gqa_and_rope():
    """extract_head + controlled(rope_on=True) reproduce LlamaAttention's per-head output."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    n_heads, dh = 4, 8
    seen = {}
    attn = model.model.layers[1].self_attn
    h1 = attn.q_proj.register_forward_pre_hook(lambda mod, args: seen.__setitem__("x", args[0].detach()))
    h2 = attn.o_proj.register_forward_pre_hook(lambda mod, args: seen.__setitem__("o", args[0].detach()))
    k, m = 3, 6
    ids = torch.randint(0, 50, (1, k + m), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(input_ids=ids)
    h1.remove(); h2.remove()  # noqa: E702
    X = seen["x"].to(T.DTYPE)                          # (1, k+m, d) = RMSNorm(h_1)
    U, X0 = X[:, None, :k], X[:, k:]
    assert torch.allclose(T.layer_inputs(model, ids, [1])[1], X, atol=1e-6)
    for h in range(n_heads):
        head = T.extract_head(model, 1, h)
        assert head.kv_head == h // 2
        for i in (0, m - 1):
            y, _ = T.controlled(U, X0, head, row=i, rope_on=True)
            ref = seen["o"][0, k + i, h * dh:(h + 1) * dh].to(T.DTYPE)
            assert torch.allclose(y[0, 0], ref, atol=1e-5), (h, i)
    # relative positions only: the x0 part of the controlled row equals the uncontrolled output
    head = T.extract_head(model, 1, 0)
    y0, _ = T.uncontrolled(X0, head, rope_on=True)
    y, a = T.controlled(U * 0, X0, head, rope_on=True)   # zero controls: keys 0, values 0
    assert torch.allclose(y[:, 0] / (1 - a), y0, atol=1e-12)
