"""Key files (PROTOCOL section 1, local layer): a host's seed saved 0600, round-tripped, and refused when others can read it."""

from __future__ import annotations

import stat

import pytest

from gonka_pipelines.local.keys import load_key, save_key
from gonka_pipelines.protocol.crypto import KeyPair

KEY = KeyPair.from_seed(bytes(range(32)))


def test_saved_key_is_0600_and_round_trips(tmp_path):
    path = tmp_path / "keys" / "host.key"
    save_key(path, KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == KEY.seed.hex() + "\n"
    assert load_key(path) == KEY


def test_save_key_tightens_an_existing_loose_file(tmp_path):
    path = tmp_path / "host.key"
    path.write_text("old")
    path.chmod(0o644)
    save_key(path, KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_load_key_refuses_a_key_others_can_read(tmp_path, mode):
    path = tmp_path / "host.key"
    save_key(path, KEY)
    path.chmod(mode)
    with pytest.raises(PermissionError, match=r"must be 0600") as error:
        load_key(path)
    assert str(path) in str(error.value)


def test_load_key_refuses_a_file_that_is_not_a_key(tmp_path):
    path = tmp_path / "host.key"
    save_key(path, KEY)
    path.write_text("not a key\n")
    with pytest.raises(ValueError, match="not a key file"):
        load_key(path)
