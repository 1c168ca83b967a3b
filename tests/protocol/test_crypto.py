"""Signatures, domain separation, canonical encoding and addresses (PROTOCOL section 1); key files are in tests/chain/test_key_files.py."""

from __future__ import annotations

import datetime
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from gonka_pipelines.protocol.crypto import (
    ADDRESS_PREFIX,
    ENCODING_VERSION,
    THREADED_FROM,
    KeyPair,
    MessageKind,
    address_from_public_key,
    canonical_bytes,
    canonical_row_bytes,
    hash_value,
    message_bytes,
    sha256_hex,
    sign_each,
    verify,
    verify_each,
    verify_encoded_each,
)

CHAIN = "gonka-test-1"
KEY = KeyPair.from_seed(bytes(range(32)))
OTHER = KeyPair.from_seed(bytes(range(1, 33)))
BODY = {"developer": KEY.public_key, "nonce": 7, "prompt": "héllo ✓", "max_tokens": 16, "weights": [1, 2.5, None, True]}
SIGNATURE = KEY.sign(CHAIN, MessageKind.TASK, BODY)
MESSAGE = message_bytes(CHAIN, MessageKind.TASK, BODY)


def test_signature_verifies_and_is_deterministic():
    assert verify(KEY.public_key, CHAIN, MessageKind.TASK, BODY, SIGNATURE)
    assert KEY.sign(CHAIN, MessageKind.TASK, BODY) == SIGNATURE  # ed25519 is deterministic
    assert len(bytes.fromhex(SIGNATURE)) == 64 and len(bytes.fromhex(KEY.public_key)) == 32


def test_signature_covers_exactly_the_domain_separated_canonical_bytes():
    assert MESSAGE == f"gonka/v1|{CHAIN}|task|".encode() + canonical_bytes(BODY)
    VerifyKey(bytes.fromhex(KEY.public_key)).verify(MESSAGE, bytes.fromhex(SIGNATURE))


@settings(max_examples=150, deadline=None)
@given(position=st.integers(0, len(MESSAGE) - 1), flip=st.integers(1, 255))
def test_any_tampered_message_byte_fails(position, flip):
    tampered = bytearray(MESSAGE)
    tampered[position] ^= flip
    with pytest.raises(BadSignatureError):
        VerifyKey(bytes.fromhex(KEY.public_key)).verify(bytes(tampered), bytes.fromhex(SIGNATURE))


@settings(max_examples=150, deadline=None)
@given(position=st.integers(0, 63), flip=st.integers(1, 255))
def test_any_tampered_signature_byte_fails(position, flip):
    tampered = bytearray.fromhex(SIGNATURE)
    tampered[position] ^= flip
    assert not verify(KEY.public_key, CHAIN, MessageKind.TASK, BODY, tampered.hex())


@settings(max_examples=50, deadline=None)
@given(field=st.sampled_from(sorted(BODY)), data=st.data())
def test_any_changed_body_field_fails(field, data):
    value = data.draw(st.one_of(st.integers(), st.text(max_size=8)).filter(lambda v: v != BODY[field]))
    assert not verify(KEY.public_key, CHAIN, MessageKind.TASK, BODY | {field: value}, SIGNATURE)


@pytest.mark.parametrize("kind", [k for k in MessageKind if k is not MessageKind.TASK])
def test_a_signature_of_one_kind_never_verifies_as_another(kind):
    assert not verify(KEY.public_key, CHAIN, kind, BODY, SIGNATURE)


def test_a_task_signature_does_not_verify_as_a_block():
    block_signature = KEY.sign(CHAIN, MessageKind.BLOCK, BODY)
    assert verify(KEY.public_key, CHAIN, MessageKind.BLOCK, BODY, block_signature)
    assert not verify(KEY.public_key, CHAIN, MessageKind.BLOCK, BODY, SIGNATURE)
    assert not verify(KEY.public_key, CHAIN, MessageKind.TASK, BODY, block_signature)


@pytest.mark.parametrize("chain_id", ["gonka-test-2", "gonka-mainnet", "", CHAIN + " "])
def test_a_signature_does_not_verify_under_another_chain_id(chain_id):
    assert not verify(KEY.public_key, chain_id, MessageKind.TASK, BODY, SIGNATURE)


def test_a_signature_does_not_verify_under_another_key():
    assert not verify(OTHER.public_key, CHAIN, MessageKind.TASK, BODY, SIGNATURE)


@pytest.mark.parametrize("public_key, signature", [
    ("not hex", SIGNATURE), (KEY.public_key, "zz"), (KEY.public_key[:-2], SIGNATURE), (KEY.public_key, SIGNATURE[:-2]),
    (KEY.public_key, ""),
])
def test_garbage_keys_and_signatures_are_refused_not_raised(public_key, signature):
    assert verify(public_key, CHAIN, MessageKind.TASK, BODY, signature) is False


def test_unknown_message_kind_is_refused():
    with pytest.raises(ValueError):
        message_bytes(CHAIN, "not-a-kind", BODY)


# -- canonical encoding --------------------------------------------------------------------------


def test_canonical_encoding_is_sorted_compact_utf8():
    assert canonical_bytes({"b": 1, "a": [1.5, "é", None, False]}) == '{"a":[1.5,"é",null,false],"b":1}'.encode()


@settings(deadline=None)
@given(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5), st.booleans()), max_size=8),
       st.randoms())
def test_key_order_is_irrelevant(mapping, rng):
    items = list(mapping.items())
    rng.shuffle(items)
    assert canonical_bytes(dict(items)) == canonical_bytes(mapping)
    assert hash_value(dict(items)) == hash_value(mapping)


def test_nested_key_order_is_irrelevant_for_signatures():
    reordered = {"outer": {"y": 2, "x": 1}, "a": 0}
    assert KEY.sign(CHAIN, MessageKind.TASK, reordered) == KEY.sign(CHAIN, MessageKind.TASK, {"a": 0, "outer": {"x": 1, "y": 2}})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, {"a": [1, math.nan]}, [{"x": math.inf}]])
def test_non_finite_floats_are_refused(value):
    with pytest.raises(ValueError, match="non-finite"):
        canonical_bytes(value)


@pytest.mark.parametrize("value", [b"raw", {"a": b"raw"}, [bytearray(b"x")], {"a": {1, 2}}, object()])
def test_bytes_and_other_types_are_refused(value):
    with pytest.raises(ValueError, match="cannot encode"):
        canonical_bytes(value)


def test_non_string_keys_are_refused():
    with pytest.raises(ValueError, match="non-string key"):
        canonical_bytes({1: "a"})


def test_refusal_names_the_path():
    with pytest.raises(ValueError, match=r"\$\.a\.b\[1\]"):
        canonical_bytes({"a": {"b": [0, math.nan]}})


def test_tuples_encode_as_lists():
    assert canonical_bytes({"a": (1, 2)}) == canonical_bytes({"a": [1, 2]})


def test_hash_value_is_sha256_of_canonical_bytes():
    assert hash_value(BODY) == sha256_hex(canonical_bytes(BODY))
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# -- addresses and keys --------------------------------------------------------------------------


def test_address_is_prefix_plus_forty_hex_of_the_key_hash():
    assert KEY.address == address_from_public_key(KEY.public_key)
    assert KEY.address == ADDRESS_PREFIX + sha256_hex(bytes.fromhex(KEY.public_key))[:40]
    assert KEY.address != OTHER.address


def test_derived_keys_are_deterministic_and_distinct():
    assert KeyPair.derive("c", "host-a", "s") == KeyPair.derive("c", "host-a", "s")
    assert KeyPair.derive("c", "host-a", "s").public_key == KeyPair.derive("c", "host-a", "s").public_key
    variants = {KeyPair.derive(*args).public_key for args in
                [("c", "host-a", "s"), ("c", "host-b", "s"), ("d", "host-a", "s"), ("c", "host-a", "t")]}
    assert len(variants) == 4


def test_seed_must_be_32_bytes():
    with pytest.raises(ValueError, match="32 bytes"):
        KeyPair.from_seed(b"short")


def test_generated_keys_differ():
    assert KeyPair.generate().public_key != KeyPair.generate().public_key



# -- the fast row encoder: byte-identical to canonical_bytes over every column type ---------------------------------

EDGE_FLOATS = [0.0, -0.0, 1.0, -1.5, 0.1, 1e-4, 9.999e-5, 1e-5, 3.008264692815159e-05, 1e-6, 5.986284826458855e-06, 1e-7,
               1.23e-8, 1e-10, 5e-324, 2.2250738585072014e-308, 1e15, 1e16, 1.5e16, 1e22, 1.7976931348623157e308,
               123456789012345678.0, -2.5e-9]
EDGE_INTS = [0, -1, 1, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, -(2**64) - 5, 10**30]
EDGE_TEXT = ["", "plain", "é ü 中文 🙂", "\u2028\u2029\x7f\x80\ufeff", "".join(chr(i) for i in range(32)), 'quote " and \\',
             "null", "0.00001", "x e-5 y", "1e-6"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20), st.sampled_from(EDGE_FLOATS))
COLUMN_VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=6), st.lists(st.lists(SCALARS, max_size=4), max_size=4))


@pytest.mark.parametrize("value", [*EDGE_FLOATS, *[-f for f in EDGE_FLOATS], *EDGE_INTS, *EDGE_TEXT, None, True, False,
                                   [], [[]], [1, 2.5e-5, "a", None], [[0.5, -1e-6], [7, 8]], list(range(40))])
def test_a_rows_fast_encoding_is_canonical_bytes(value):
    row = {"commitment": "t", "b_column": value, "a_column": [value, value]}
    assert canonical_row_bytes(row) == canonical_bytes(row)


@settings(max_examples=300, deadline=None)
@given(COLUMN_VALUES)
def test_a_top_level_value_encodes_as_canonical_bytes(value):
    """Lists and scalars (a hashed list, a signed list body) take the fast path too, with the same bytes."""
    assert canonical_row_bytes(value) == canonical_bytes(value)
    assert hash_value(value) == sha256_hex(canonical_bytes(value))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12), COLUMN_VALUES, max_size=8))
def test_any_row_of_column_values_encodes_as_canonical_bytes(row):
    assert canonical_row_bytes(row) == canonical_bytes(row)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1.0, math.nan]])
def test_the_fast_encoder_refuses_non_finite_floats_like_canonical_bytes(value):
    with pytest.raises(ValueError, match="non-finite"):
        canonical_row_bytes({"x": value})
    with pytest.raises(ValueError, match="non-finite"):
        canonical_row_bytes(value)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12), COLUMN_VALUES, max_size=8))
def test_a_message_covers_the_canonical_bytes_of_its_body(body):
    """Signing encodes bodies with orjson; what it covers is byte for byte the canonical encoding."""
    assert message_bytes(CHAIN, MessageKind.RESULT, body) == f"{ENCODING_VERSION}|{CHAIN}|result|".encode() + canonical_bytes(body)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12), COLUMN_VALUES, max_size=8))
def test_a_hash_is_of_the_canonical_bytes(value):
    assert hash_value(value) == sha256_hex(canonical_bytes(value))


@pytest.mark.parametrize("value", [b"raw", datetime.datetime(2026, 1, 1), datetime.date(2026, 1, 1), {1: "x"}, {"a": {2: 3}},
                                   float("nan"), [1.0, float("inf")]])
def test_a_body_canonical_bytes_refuses_is_refused_for_signing(value):
    with pytest.raises(ValueError, match="cannot encode"):
        message_bytes(CHAIN, MessageKind.RESULT, {"field": value})




def test_sign_message_is_libsodiums_ed25519_signature():
    """KeyPair.sign_message calls libsodium straight: RFC 8032's first test vector (an empty message), and the bytes
    PyNaCl's SigningKey.sign gives for other keys and messages."""
    rfc = KeyPair.from_seed(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    assert rfc.public_key == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert rfc.sign_message(b"") == ("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e"
                                     "39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    for key, message in ((KEY, MESSAGE), (OTHER, b"x" * 1000), (KeyPair.derive("chain-x", "host", "seed"), b"")):
        assert key.sign_message(message) == key.signing_key.sign(message).signature.hex()


@pytest.mark.parametrize("cores", [1, 4])
def test_sign_each_and_verify_each_on_threads_match_one_loop_in_order(monkeypatch, cores):
    """sign_each and verify_each give what KeyPair.sign and verify give one by one, in item order, whether the items
    go to one thread or to a thread per core; a bad signature, a wrong key or a garbled key fail at their own place."""
    monkeypatch.setattr("gonka_pipelines.protocol.threads.os.cpu_count", lambda: cores)
    keys = [KeyPair.derive("chain-x", f"host-{i}", "seed") for i in range(7)]
    signings = [(keys[i % 7], {"n": i, "text": f"body {i}"}) for i in range(3 * THREADED_FROM + 5)]
    signatures = sign_each("chain-x", MessageKind.POC_BATCH, signings)
    assert signatures == [key.sign("chain-x", MessageKind.POC_BATCH, body) for key, body in signings]
    checks = [(key.public_key, body, signature) for (key, body), signature in zip(signings, signatures)]
    checks[3] = (checks[3][0], checks[3][1], checks[4][2])           # another body's signature
    wrong = THREADED_FROM + 1
    checks[wrong] = (keys[(wrong + 1) % 7].public_key, *checks[wrong][1:])  # another key
    checks[-1] = ("not hex", *checks[-1][1:])                        # a garbled key
    verdicts = verify_each("chain-x", MessageKind.POC_BATCH, checks)
    assert [i for i, ok in enumerate(verdicts) if not ok] == [3, wrong, len(checks) - 1]
    assert verify_each("chain-x", MessageKind.TASK, checks[:5]) == [False] * 5, "another kind never verifies"


def test_a_body_with_no_canonical_encoding_verifies_nothing():
    """A non-finite float (a tampered row's) has no canonical encoding: verify says False rather than raising, one by
    one, on threads, and as an encoded body that could not be made (None)."""
    key = KeyPair.derive("chain-x", "host", "seed")
    body = {"distances": [0.5]}
    signature = key.sign("chain-x", MessageKind.POC_BATCH, body)
    assert verify(key.public_key, "chain-x", MessageKind.POC_BATCH, body, signature)
    assert not verify(key.public_key, "chain-x", MessageKind.POC_BATCH, {"distances": [float("nan")]}, signature)
    assert verify_each("chain-x", MessageKind.POC_BATCH, [(key.public_key, {"distances": [float("inf")]}, signature)]) == [False]
    assert verify_encoded_each("chain-x", MessageKind.POC_BATCH, [(key.public_key, canonical_row_bytes(body), signature),
                                                                   (key.public_key, None, signature)]) == [True, False]
