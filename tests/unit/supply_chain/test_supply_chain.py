"""Attaching attestations never loses a record: a registry that refuses is the record's error."""

import json
import logging

from factory.records.store import LocalRecordStore
from factory.supply_chain.attestation import attest_build
from factory.supply_chain.seal import seal_image
from factory.supply_chain.signing_keys import generate_key_pair


def test_without_a_key_builds_are_unsigned_and_say_so_once(monkeypatch, caplog):
    monkeypatch.delenv("FACTORY_SIGNING_KEY", raising=False)
    monkeypatch.setattr("factory.supply_chain.attestation._said_unsigned", False)
    with caplog.at_level(logging.WARNING, logger="factory.supply_chain.attestation"):
        for _ in range(3):
            info = attest_build(
                {}, image_ref="r/factory/m:t", image_digest="sha256:" + "a" * 64, build_id="b"
            )
            assert (info.signed, info.items, info.error) == (False, [], None)
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "attestations are unsigned" in caplog.records[0].getMessage()


def seal_unreachable(status: str, records: LocalRecordStore):
    """`seal_image` of build b1 for an image in a registry that refuses the connection (nothing
    listens on port 9 of the loopback)."""
    return seal_image(
        status=status,
        build_id="b1",
        image_ref="127.0.0.1:9/factory/m:linux_amd64-0123456789ab",
        image_digest="sha256:" + "a" * 64,
        from_quarantine=False,
        records=records,
    )


def test_a_registry_that_does_not_answer_is_the_records_error(tmp_path, monkeypatch):
    private, _, key_id = generate_key_pair(tmp_path / "k")
    monkeypatch.setenv("FACTORY_SIGNING_KEY", str(private))
    records = LocalRecordStore(tmp_path / "data")
    records.put("sbom", "b1", json.dumps({"metadata": {}}).encode())
    attestations, quarantine = seal_unreachable("pass", records)
    assert quarantine is None
    assert attestations.signed and attestations.key_id == key_id and attestations.items == []
    assert "registry 127.0.0.1:9 does not answer" in attestations.error


def test_a_failing_image_that_cannot_be_quarantined_says_why(tmp_path):
    _, quarantine = seal_unreachable("fail", LocalRecordStore(tmp_path / "data"))
    assert quarantine.ref is None and "quarantining" in quarantine.error
    assert "does not answer" in quarantine.error
