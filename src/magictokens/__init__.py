"""magictokens: magic tokens as control inputs of language models.

    import magictokens
    r = magictokens.reach(model, tokenizer, "The capital of France is", " Berlin")   # -> ReachResult
    print(r.summary())
"""
__version__ = "0.1.0"

_LAZY = {"reach": "reach", "ReachConfig": "ReachConfig", "ReachResult": "ReachResult"}


def __getattr__(name):
    # lazy, on first use of magictokens.reach: `import magictokens` (every stage, the CLI's data command)
    # must neither import torch nor depend on the search code (tests/test_dvc_deps.py reads static imports)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(".shortest_prompt", __name__), _LAZY[name])
    raise AttributeError(f"module 'magictokens' has no attribute {name!r}")
