import pytest
import torch

from magictokens.models import build_tiny_model


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): 2-layer random Llama over a 64-word vocabulary."""
    torch.manual_seed(0)
    return build_tiny_model(seed=0)


@pytest.fixture(scope="session")
def tiny_ids(tiny):
    _, tok = tiny
    return lambda text: tok(text, add_special_tokens=False).input_ids
