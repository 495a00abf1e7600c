"""Typed fields of every config dataclass, validated by pydantic on load.

The configs stay plain `dataclasses` (constructed directly in code and tests,
`asdict` for logs and resume keys); `config.build` validates a params.yaml
section against one with `pydantic.TypeAdapter`, which reads these
annotations. Scalars are strict: `true` is not a count, `"3"` is not a number.

    @params                      # unknown keys are errors
    @dataclass
    class GCGConfig:
        num_steps: Count = 34    # int >= 0
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, Strict, with_config

# Decorator for every config dataclass: a key the dataclass lacks is a typo.
params = with_config(ConfigDict(extra="forbid"))

Count = Annotated[int, Strict(), Field(ge=0)]             # 0, 1, 2, ...
Positive = Annotated[int, Strict(), Field(gt=0)]          # 1, 2, ...
Int = Annotated[int, Strict()]                            # any integer (layers count from the end when < 0)
Flag = Annotated[bool, Strict()]
AutoFlag = Flag | Literal["auto"]                         # true / false, or decided by the hardware
Real = Annotated[float, Strict()]                         # ints are accepted as reals
PositiveReal = Annotated[float, Strict(), Field(gt=0)]
NonNegativeReal = Annotated[float, Strict(), Field(ge=0)]
Share = Annotated[float, Strict(), Field(ge=0, le=1)]     # a fraction in [0, 1]
Text = Annotated[str, Strict()]
