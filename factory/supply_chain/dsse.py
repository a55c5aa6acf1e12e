"""DSSE envelopes (Dead Simple Signing Envelope, v1): sign a payload, parse and verify one.

The signature covers the pre-authentication encoding (PAE) of the payload type and the payload
bytes, never the JSON of the envelope, so re-serializing an envelope cannot change what was signed
and a payload cannot be passed off as another type. An envelope read from a registry is hostile
input: `parse_envelope` checks every field (types, base64, sizes, signature count) and names the
one that is wrong; `verify_envelope` accepts it only when a signature verifies with the given key.

No Dagster import.
"""

import base64
import binascii
import json
from dataclasses import dataclass

from factory.errors import FactoryError
from factory.supply_chain.signing_keys import PublicKey, SigningKey

# The in-toto attestation framework's payload type for a Statement.
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
# Statements are a few KiB (provenance) to a few MiB (a large SBOM).
MAX_ENVELOPE_BYTES = 32 * 1024 * 1024
MAX_SIGNATURES = 16
MAX_KEYID_CHARS = 256
MAX_PAYLOAD_TYPE_CHARS = 256


class EnvelopeError(FactoryError, ValueError):
    """A DSSE envelope that is malformed, or whose signature does not verify."""


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope: the payload bytes (decoded), its type and its signatures."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def as_dict(self) -> dict:
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode(),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in self.signatures
            ],
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":")).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSEv1 pre-authentication encoding: `DSSEv1 SP LEN(type) SP type SP LEN(body) SP body`.

    Lengths are byte counts in ASCII decimal, the type is UTF-8.
    """
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def sign_envelope(
    payload: bytes, key: SigningKey, payload_type: str = IN_TOTO_PAYLOAD_TYPE
) -> Envelope:
    """An envelope holding `payload`, signed once with `key` (its keyid is the key's id)."""
    signature = key.sign(pae(payload_type, payload))
    return Envelope(payload_type, payload, (Signature(key.key_id, signature),))


def _b64(value: object, where: str, field: str) -> bytes:
    if not isinstance(value, str):
        msg = f"{where}: {field} is not a base64 string"
        raise EnvelopeError(msg)
    try:
        # Standard or URL-safe alphabet, as the DSSE spec allows either.
        alphabet = value.replace("-", "+").replace("_", "/")
        return base64.b64decode(alphabet + "=" * (-len(alphabet) % 4), validate=True)
    except (binascii.Error, ValueError):
        msg = f"{where}: {field} is not valid base64"
        raise EnvelopeError(msg) from None


def parse_envelope(data: bytes, where: str) -> Envelope:
    """Check and decode an envelope's JSON; EnvelopeError naming `where` and the bad field."""
    if len(data) > MAX_ENVELOPE_BYTES:
        msg = (
            f"{where}: {len(data)} bytes, more than a DSSE envelope may have ({MAX_ENVELOPE_BYTES})"
        )
        raise EnvelopeError(msg)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        msg = f"{where}: not a DSSE envelope (not JSON)"
        raise EnvelopeError(msg) from None
    if not isinstance(doc, dict):
        msg = f"{where}: not a DSSE envelope (expected a JSON object)"
        raise EnvelopeError(msg)
    payload_type = doc.get("payloadType")
    if not isinstance(payload_type, str) or not 0 < len(payload_type) <= MAX_PAYLOAD_TYPE_CHARS:
        msg = f"{where}: payloadType is missing or not a short string"
        raise EnvelopeError(msg)
    payload = _b64(doc.get("payload"), where, "payload")
    signatures = doc.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        msg = f"{where}: signatures is missing or empty (an unsigned envelope proves nothing)"
        raise EnvelopeError(msg)
    if len(signatures) > MAX_SIGNATURES:
        msg = f"{where}: {len(signatures)} signatures (at most {MAX_SIGNATURES})"
        raise EnvelopeError(msg)
    parsed = []
    for n, item in enumerate(signatures):
        if not isinstance(item, dict):
            msg = f"{where}: signatures[{n}] is not an object"
            raise EnvelopeError(msg)
        keyid = item.get("keyid", "")
        if not isinstance(keyid, str) or len(keyid) > MAX_KEYID_CHARS:
            msg = f"{where}: signatures[{n}].keyid is not a short string"
            raise EnvelopeError(msg)
        parsed.append(Signature(keyid, _b64(item.get("sig"), where, f"signatures[{n}].sig")))
    return Envelope(payload_type, payload, tuple(parsed))


def verify_envelope(
    envelope: Envelope, key: PublicKey, where: str, payload_type: str = IN_TOTO_PAYLOAD_TYPE
) -> bytes:
    """The payload when one signature verifies with `key` over its PAE; EnvelopeError if not."""
    if envelope.payload_type != payload_type:
        msg = f"{where}: payloadType is {envelope.payload_type[:80]!r}, expected {payload_type!r}"
        raise EnvelopeError(msg)
    message = pae(envelope.payload_type, envelope.payload)
    if any(key.verify(s.sig, message) for s in envelope.signatures):
        return envelope.payload
    keyids = ", ".join(sorted({s.keyid[:16] or "(none)" for s in envelope.signatures}))
    msg = (
        f"{where}: no signature verifies with key {key.key_id[:16]} (signed by key id(s) "
        f"{keyids}): the attestation was changed after signing, or signed with another key"
    )
    raise EnvelopeError(msg)
