import torch

from magictokens.scoring import Scorer, onehot_gradient


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


def test_onehot_gradient_predicts_swap_direction(tiny, tiny_ids):
    """Finite check: the gradient equals d loss / d onehot computed by autograd on embeddings."""
    model, _ = tiny
    x0 = tiny_ids("the dog is")
    u = torch.tensor([10, 11])
    g = onehot_gradient(model, u, torch.tensor(x0), 25)
    assert g.shape == (2, model.config.vocab_size)
    W = model.get_input_embeddings().weight
    emb = W[u].detach().clone().requires_grad_(True)
    inp = torch.cat([emb, W[torch.tensor(x0)].detach()])[None]
    logits = model(inputs_embeds=inp).logits[0, -1]
    loss = torch.nn.functional.cross_entropy(logits[None], torch.tensor([25]))
    (ge,) = torch.autograd.grad(loss, emb)
    assert torch.allclose(g, ge @ W.detach().T, atol=1e-5)
