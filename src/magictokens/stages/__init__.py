"""One module per stage: `run(scale, out_root, overrides) -> <Stage>Result`.

A stage owns its params section, its models and paths, and its result type,
which *is* the schema of its results JSON (`save` / `load` round-trip), so
notebooks only call `run` (or `load`), plot and narrate, and `report.py`
reads the same types.
"""
