"""The prefix KV cache goes through whichever name the installed transformers uses.

transformers 5.24 takes (and returns) the cache as ``cache`` and warns that
``past_key_values`` goes away in 5.40; 5.17 (the GPU machine's) only knows
``past_key_values``. ``scoring.cache_kwarg`` picks the name from the model's
forward signature; both paths must give the numbers of a plain forward.
"""
import logging
import warnings
from types import SimpleNamespace

import pytest
import torch

from magictokens.scoring import Scorer, cache_kwarg

pytestmark = pytest.mark.unit


class OldCacheAPI(torch.nn.Module):
    """A model with transformers 5.17's names: forward(past_key_values=...) -> .past_key_values.

    It has no ``cache`` argument and no ``**kwargs``, so a call with ``cache=`` fails loudly.
    """

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.new_name = cache_kwarg(type(model))

    @property
    def device(self):
        return self.inner.device

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, input_ids=None, inputs_embeds=None, past_key_values=None, use_cache=None, logits_to_keep=0):
        kw = {} if past_key_values is None else {self.new_name: past_key_values}
        out = self.inner(input_ids=input_ids, inputs_embeds=inputs_embeds, use_cache=use_cache,
                         logits_to_keep=logits_to_keep, **kw)
        return SimpleNamespace(logits=out.logits, past_key_values=getattr(out, self.new_name))


def _scores(model, tiny_ids, cached):
    prefix, x0 = tiny_ids("the king and the queen"), tiny_ids("was in the city")
    controls = torch.randint(4, 60, (7, 3), generator=torch.Generator().manual_seed(2))
    return Scorer(model, x0, 20, prefix_ids=prefix, batch_size=3, use_prefix_cache=cached).score(controls)


def test_installed_transformers_gets_its_own_name_without_a_deprecation_warning(tiny, tiny_ids):
    model, _ = tiny
    # "its own name", from the model's behaviour rather than from its signature (which is what cache_kwarg
    # reads): the one field among the two names that a forward's output fills with the cache it returns
    with torch.no_grad():
        out = model(input_ids=torch.tensor([tiny_ids("the king")]), use_cache=True)
    assert set(out.keys()) & {"cache", "past_key_values"} == {cache_kwarg(type(model))}
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a = _scores(model, tiny_ids, cached=True)
    finally:
        logger.removeHandler(handler)
    messages = [str(w.message) for w in caught] + seen
    assert not [m for m in messages if "past_key_values" in m], messages
    b = _scores(model, tiny_ids, cached=False)
    assert torch.allclose(a.loss, b.loss, atol=1e-4) and torch.equal(a.argmax, b.argmax)


def test_old_name_fallback_gives_the_same_scores(tiny, tiny_ids):
    model, _ = tiny
    old = OldCacheAPI(model)
    assert cache_kwarg(type(old)) == "past_key_values"
    cached_old = _scores(old, tiny_ids, cached=True)
    cached_new = _scores(model, tiny_ids, cached=True)
    plain = _scores(model, tiny_ids, cached=False)
    assert torch.equal(cached_old.loss, cached_new.loss)  # same forward, only the argument name differs
    assert torch.allclose(cached_old.loss, plain.loss, atol=1e-4)
    assert torch.equal(cached_old.argmax, plain.argmax)
