"""The sprint's nonce streams on CPU in one pass (_streams.c): stream keys, Box-Muller uniforms and the permuting
gather that compute/sprint.py defines in torch ops."""

from typing import Any

from numpy.typing import NDArray
from typing_extensions import Buffer

_Array = Buffer | NDArray[Any]  # any C-contiguous buffer of the named item type; the outputs writable

def keys(root: int, nonces: _Array, out: _Array, /) -> None: ...
def uniforms(keys: _Array, half: int, radius: _Array, angle: _Array, scale: float, offset: float, /) -> None: ...
def affine_gather(multipliers: _Array, offsets: _Array, logits: _Array, out: _Array, /) -> None: ...
