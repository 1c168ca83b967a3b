"""How amounts read: GNK with thousands separators, every base unit kept."""

from __future__ import annotations

from fractions import Fraction

TABLE_PLACES = 9
"""Decimals of an amount in a table column, so that decimal points line up (1 GNK = 10^9 base units by default)."""


def gnk(units: int, base_units: int, places: int | None = None) -> str:
    """An amount in GNK with thousands separators: exact, trailing zeros dropped, when base_units is a power of ten;
    otherwise (or given `places`) rounded half-even to `places` decimals (default TABLE_PLACES) and padded."""
    digits = len(str(base_units)) - 1
    exact = base_units == 10**digits and places is None
    places = digits if exact else TABLE_PLACES if places is None else places
    scaled = round(Fraction(abs(units), base_units) * 10**places)
    whole, fraction = divmod(scaled, 10**places)
    text = f"{whole:,}" + (f".{fraction:0{places}d}" if places else "")
    if exact:
        text = text.rstrip("0").rstrip(".") if fraction else f"{whole:,}"
    return f"-{text}" if units < 0 and scaled else text
