"""search_dtype int8: dynamic-quantised scoring, fp32 gradients and fp32 verification."""
import pytest
import torch

from magictokens.errors import MagicTokensError
from magictokens.models import build_tiny_model, dtype_of, resolve_dtype, search_pair_of
from magictokens.scoring import Scorer, onehot_gradient

pytestmark = pytest.mark.unit


def test_int8_search_model_scores_close_to_fp32_and_takes_fp32_gradients():
    fp32, tok = build_tiny_model(seed=0)
    q, verify = search_pair_of(fp32, "int8")
    assert verify is fp32 and dtype_of(q) == "int8" and dtype_of(fp32) == "float32"
    assert any("quantized" in type(m).__module__ for m in q.modules())          # the linears really are int8
    assert not any(p is w for p in q.parameters() for w in fp32.parameters())  # fp32 is no submodule of q
    x0, y = torch.tensor([5, 9, 11, 3]), 7
    cands = torch.arange(4, 36)[:, None]
    s32, s8 = Scorer(fp32, x0, y).score(cands), Scorer(q, x0, y).score(cands)
    assert not torch.equal(s32.loss, s8.loss)                                   # int8 is not fp32 ...
    assert (s32.loss - s8.loss).abs().max() < 0.2                               # ... but close to it
    assert torch.corrcoef(torch.stack([s32.loss, s8.loss]))[0, 1] > 0.9         # and ranks candidates alike
    u = torch.tensor([4, 6])
    assert torch.equal(onehot_gradient(q, u, x0, y), onehot_gradient(fp32, u, x0, y))


def test_int8_is_a_search_dtype_only():
    with pytest.raises(MagicTokensError, match="int8.*search_dtype only"):
        resolve_dtype("int8", torch.device("cpu"))
