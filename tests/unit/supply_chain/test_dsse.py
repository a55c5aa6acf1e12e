"""DSSE envelopes: the spec's PAE vector, signing and verifying with both key kinds, bad input."""

import base64
import json

import pytest

from factory.supply_chain.dsse import (
    Envelope,
    EnvelopeError,
    pae,
    parse_envelope,
    sign_envelope,
    verify_envelope,
)
from factory.supply_chain.signing_keys import generate_key_pair, load_public_key, load_signing_key


def test_pae_matches_the_dsse_specification_vector():
    # protocol.md, "Test Vectors": PAE("http://example.com/HelloWorld", "hello world").
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters():
    assert pae("t\u00e9", "\u00e9".encode()) == b"DSSEv1 3 t\xc3\xa9 2 \xc3\xa9"
    assert pae("", b"") == b"DSSEv1 0  0 "


@pytest.fixture(params=["ed25519", "ecdsa-p256"])
def keys(request, tmp_path):
    private, public, _ = generate_key_pair(tmp_path / "key", request.param)
    return load_signing_key(private), load_public_key(public)


def test_signed_envelope_round_trips_and_verifies(keys):
    signer, public = keys
    envelope = sign_envelope(b'{"_type": "x"}', signer)
    parsed = parse_envelope(envelope.to_bytes(), "test")
    assert parsed == envelope
    assert parsed.signatures[0].keyid == signer.key_id == public.key_id
    assert verify_envelope(parsed, public, "test") == b'{"_type": "x"}'


def test_a_changed_payload_or_type_or_another_key_does_not_verify(keys, tmp_path):
    signer, public = keys
    envelope = sign_envelope(b"payload", signer)
    changed = Envelope(envelope.payload_type, b"payloaD", envelope.signatures)
    with pytest.raises(EnvelopeError, match="no signature verifies"):
        verify_envelope(changed, public, "test")
    retyped = Envelope("application/json", envelope.payload, envelope.signatures)
    with pytest.raises(EnvelopeError, match="payloadType"):
        verify_envelope(retyped, public, "test")
    _, other_pub, _ = generate_key_pair(tmp_path / "other", "ed25519")
    with pytest.raises(EnvelopeError, match="no signature verifies with key"):
        verify_envelope(envelope, load_public_key(other_pub), "test")


def _doc(**fields) -> bytes:
    doc = {
        "payloadType": "application/vnd.in-toto+json",
        "payload": base64.b64encode(b"{}").decode(),
        "signatures": [{"keyid": "k", "sig": base64.b64encode(b"s").decode()}],
    }
    doc.update(fields)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON object"),
        (_doc(payloadType=7), "payloadType"),
        (_doc(payload="***"), "payload is not valid base64"),
        (_doc(payload=None), "payload is not a base64 string"),
        (_doc(signatures=[]), "signatures is missing or empty"),
        (_doc(signatures="x"), "signatures is missing or empty"),
        (_doc(signatures=[{"sig": "AA=="}] * 17), "17 signatures"),
        (_doc(signatures=[7]), r"signatures\[0\] is not an object"),
        (_doc(signatures=[{"keyid": 1, "sig": "AA=="}]), r"signatures\[0\].keyid"),
        (_doc(signatures=[{"keyid": "k", "sig": "%%"}]), r"signatures\[0\].sig"),
        (b" " * (32 * 1024 * 1024 + 1), "more than a DSSE envelope"),
    ],
)
def test_hostile_envelopes_are_refused_by_field(data, problem):
    with pytest.raises(EnvelopeError, match=problem) as caught:
        parse_envelope(data, "registry blob sha256:abc")
    assert str(caught.value).startswith("registry blob sha256:abc: ")


def test_url_safe_base64_is_accepted():
    doc = _doc(payload=base64.urlsafe_b64encode(b"\xfb\xff").decode().rstrip("="))
    assert parse_envelope(doc, "t").payload == b"\xfb\xff"
