"""The C formatter of canonical JSON's floats (_canonical.c, Ryu's shortest digits laid out as repr) writes every
double as Python's repr does: random bit patterns, values like log-probs, integers, short decimals, the ends of the
doubles and the neighbours of each power of two and ten. Its tables are tools/ryu_tables.py's output."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gonka_pipelines.protocol import _canonical

ROOT = Path(__file__).resolve().parents[2]


def reprs(values: np.ndarray) -> list[str]:
    """The C formatter's text of each value."""
    return _canonical.reprs(np.ascontiguousarray(values, dtype=np.float64)).decode().split("\n")


def assert_written_as_repr(values: np.ndarray) -> None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    written, expected = reprs(values), [repr(value) for value in values.tolist()]
    wrong = [(e, w) for e, w in zip(expected, written, strict=True) if e != w]
    assert not wrong, f"{len(wrong)} of {len(values)} written otherwise than repr, e.g. {wrong[:5]}"


def test_random_doubles_are_written_as_repr():
    rng = np.random.default_rng(20261206)
    assert_written_as_repr(rng.integers(0, 2**64, 300_000, dtype=np.uint64).view(np.float64))  # every exponent
    assert_written_as_repr(-rng.exponential(2.0, 300_000))  # log-probs
    assert_written_as_repr(rng.standard_normal(300_000) * 10.0 ** rng.integers(-30, 30, 300_000))


def test_integers_and_short_decimals_are_written_as_repr():
    """Values whose shortest digits end in zeros or are exact: Ryu's rarer path, where trailing zeros decide the
    rounding."""
    rng = np.random.default_rng(7)
    assert_written_as_repr(np.arange(-100_000, 100_000, dtype=np.float64))
    assert_written_as_repr(rng.integers(-(10**17), 10**17, 100_000).astype(np.float64))
    mantissas, exponents = rng.integers(1, 10**6, 50_000).tolist(), rng.integers(-25, 25, 50_000).tolist()
    assert_written_as_repr(np.array([float(f"{m}e{e}") for m, e in zip(mantissas, exponents)]))
    assert_written_as_repr(np.arange(1, 100_000) * 0.001)


def test_the_ends_and_the_powers_are_written_as_repr():
    powers_of_ten = np.array([float(f"1e{p}") for p in range(-323, 309)])
    powers_of_two = np.ldexp(1.0, np.arange(-1074, 1024))
    for values in (powers_of_ten, powers_of_two):
        assert_written_as_repr(values)
        assert_written_as_repr(np.nextafter(values, np.inf))
        assert_written_as_repr(np.nextafter(values, -np.inf))
        assert_written_as_repr(-values)
    assert_written_as_repr(np.arange(1, 50_000, dtype=np.uint64).view(np.float64))  # subnormals
    assert reprs(np.array([0.0, -0.0, 5e-324, 1.7976931348623157e308, 1e16, 9999999999999998.0, 1e-4, 1e-5, 0.1, 123.0,
                           -1.5e-7, 1e22, 1e100])) == [
        "0.0", "-0.0", "5e-324", "1.7976931348623157e+308", "1e+16", "9999999999999998.0", "0.0001", "1e-05", "0.1",
        "123.0", "-1.5e-07", "1e+22", "1e+100"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_double_has_no_text(value):
    with pytest.raises(ValueError, match="not finite"):
        _canonical.reprs(np.array([1.0, value]))


def test_the_tables_are_the_generators_output():
    spec = importlib.util.spec_from_file_location("ryu_tables", ROOT / "tools" / "ryu_tables.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert (ROOT / "gonka_pipelines" / "protocol" / "_ryu_tables.h").read_text() == generator.header()
