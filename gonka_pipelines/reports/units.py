"""How amounts read: GNK with thousands separators, every base unit kept."""

from __future__ import annotations


def gnk(units: int, base_units: int) -> str:
    """An amount in GNK with thousands separators and every base unit kept (1 GNK = base_units)."""
    whole, fraction = divmod(abs(units), base_units)
    digits = len(str(base_units)) - 1
    text = f"{whole:,}" + (f".{fraction:0{digits}d}".rstrip("0").rstrip(".") if fraction else "")
    return f"-{text}" if units < 0 else text
