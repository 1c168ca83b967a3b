"""An honest validator's verdicts on a batch of outputs of one length (_comparison.c), bit for bit as
inference_validation's numpy functions give them."""

from typing import Any

from numpy.typing import NDArray
from typing_extensions import Buffer

_Array = Buffer | NDArray[Any]  # any C-contiguous buffer of the named item type; the outputs writable

def judge(tokens: _Array, e_ids: _Array, e_lp: _Array, v_ids: _Array, v_lp: _Array, outputs: int, positions: int,
          e_width: int, v_width: int, tie_tolerance: float, threshold: float, epsilon: float, denominator: float,
          passed: _Array, similarity: _Array, reason: _Array, /) -> None: ...
