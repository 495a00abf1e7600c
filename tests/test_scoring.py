import copy
import types

import pytest
import torch

from magictokens.scoring import Scorer, onehot_gradient

pytestmark = pytest.mark.unit


def full_forward_loss(model, ids, target):
    logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    return float(-torch.log_softmax(logits, -1)[target]), logits


def test_scores_match_a_plain_full_forward(tiny, tiny_ids):
    model, _ = tiny
    x0 = tiny_ids("the cat is big and old")
    controls = torch.tensor([[5, 6], [7, 8], [30, 31]])
    s = Scorer(model, x0, target_id=12, batch_size=2).score(controls)
    for i, c in enumerate(controls.tolist()):
        loss, logits = full_forward_loss(model, c + x0, 12)
        assert abs(float(s.loss[i]) - loss) < 1e-4
        other = logits.clone(); other[12] = -1e9
        assert abs(float(s.margin[i]) - float(logits[12] - other.max())) < 1e-4
        assert int(s.argmax[i]) == int(logits.argmax())


def test_prefix_cache_matches_uncached(tiny, tiny_ids):
    model, _ = tiny
    prefix, x0 = tiny_ids("the king and the queen"), tiny_ids("was in the city")
    controls = torch.randint(4, 60, (9, 3), generator=torch.Generator().manual_seed(1))
    cached = Scorer(model, x0, 20, prefix_ids=prefix, batch_size=4, use_prefix_cache=True)
    plain = Scorer(model, x0, 20, prefix_ids=prefix, batch_size=4, use_prefix_cache=False)
    a, b = cached.score(controls), plain.score(controls)
    assert torch.allclose(a.loss, b.loss, atol=1e-4)
    # the cache must not be mutated by use: score again, same answer
    assert torch.allclose(cached.score(controls).loss, a.loss, atol=1e-5)


def float64_copy(model):
    """A float64 copy of `model` that computes in float64 throughout.

    transformers' RMSNorm upcasts to float32 and back whatever the model's dtype,
    which would limit finite differences to ~1e-4; its forward is replaced here by
    the same formula, w * x / sqrt(mean(x^2) + eps), in the input's dtype. The
    gradient under test and its reference both use this copy.
    """
    m = copy.deepcopy(model).double()

    def rms_norm(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    norms = [mod for mod in m.modules() if type(mod).__name__.endswith("RMSNorm")]
    assert norms, "no RMSNorm found: the tiny model changed architecture"
    for mod in norms:
        mod.forward = types.MethodType(rms_norm, mod)
    return m


@pytest.fixture(scope="module")
def tiny64(tiny):
    return float64_copy(tiny[0])


def relaxed_loss(model, onehot, suffix, target, prefix, objective):
    """(B, k, V) relaxed one-hot prompts -> (B,) float64 loss, through inputs_embeds = onehot @ W_E.

    ce: -log softmax(z)[y] = logsumexp(z) - z_y; margin: max_{v != y} z_v - z_y.
    """
    W = model.get_input_embeddings().weight.detach()
    B = onehot.shape[0]
    parts = [W[prefix].expand(B, -1, -1)] if prefix is not None else []
    parts += [onehot @ W, W[suffix].expand(B, -1, -1)]
    with torch.no_grad():
        z = model(inputs_embeds=torch.cat(parts, dim=1)).logits[:, -1].double()
    if objective == "ce":
        return torch.logsumexp(z, dim=-1) - z[:, target]
    others = z.clone()
    others[:, target] = float("-inf")
    return others.max(dim=-1).values - z[:, target]


@pytest.mark.parametrize("objective", ["ce", "margin"])
@pytest.mark.parametrize("with_prefix", [False, True], ids=["no_prefix", "prefix"])
def test_onehot_gradient_matches_finite_differences(tiny, tiny64, tiny_ids, objective, with_prefix):
    """grad[i, b] - grad[i, a] (the linearised effect of swapping u_i = a for b) equals the
    directional derivative of the loss along e_b - e_a at position i, by central finite
    differences on the relaxed one-hot input in float64: every position, every token b."""
    x0 = torch.tensor(tiny_ids("the dog is"))
    prefix = torch.tensor(tiny_ids("one two")) if with_prefix else None
    u, y = torch.tensor([10, 11, 30]), 25
    k, V = len(u), tiny64.get_input_embeddings().weight.shape[0]

    g = onehot_gradient(tiny64, u, x0, y, prefix, objective)
    assert g.shape == (k, V) and g.dtype == torch.float32
    predicted = (g.double() - g.double().gather(1, u[:, None]))            # (k, V): swap u_i -> b

    # directions D[i, b] = e_b - e_{u_i} at position i, as (k*V, k, V)
    D = torch.zeros(k, V, k, V, dtype=torch.float64)
    for i in range(k):
        D[i, torch.arange(V), i, torch.arange(V)] = 1.0
        D[i, :, i, u[i]] -= 1.0
    D = D.reshape(k * V, k, V)
    x = torch.nn.functional.one_hot(u, V).double()[None]                    # (1, k, V)
    h = 1e-5
    f = lambda oh: relaxed_loss(tiny64, oh, x0, y, prefix, objective)       # noqa: E731
    fd = ((f(x + h * D) - f(x - h * D)) / (2 * h)).reshape(k, V)

    assert fd.abs().max() > 0.1                                             # not a vacuous comparison
    assert torch.allclose(predicted, fd, atol=1e-5, rtol=0), float((predicted - fd).abs().max())
    # the float32 model the searches use gives the same gradient to float32 accuracy
    g32 = onehot_gradient(tiny[0], u, x0, y, prefix, objective)
    assert torch.allclose(g32, g, atol=1e-4, rtol=0)
