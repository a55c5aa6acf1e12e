"""Hostile entries in the record store: every reader skips and reports them, nothing breaks.

Each case plants one bad entry in `records/` or `dlq/` of a temporary FACTORY_DATA_DIR (beside a
good one) and runs the real CLI commands that read the store. Every command ends with a clear
message or a warning + skip, the documented exit code, no traceback, no raw terminal escape, and
nothing in or outside the store changed.
"""

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from factory.cli.main import main
from factory.records.index_schema import SQLITE_NAME
from factory.records.store import LocalRecordStore
from tests.unit.records.test_records import make_record

REPO = Path(__file__).resolve().parents[3]
GOOD_ID = "0b6c1f2e-7a1d-4f55-9a51-3c1f0c2b9e10"
BAD_ID = "6f1c1f5e-6a55-4a3c-9d7e-0c2f8f5f4b11"
LETTER_KEY = "7d7c2a1e-0000-4000-8000-000000000001"
ESC = "\x1b"


def good_record(build_id: str = GOOD_ID, **overrides) -> dict:
    return make_record(build_id=build_id, **overrides).model_dump(mode="json")


def record_json(**overrides) -> bytes:
    value = good_record(BAD_ID)
    value.update(overrides)
    return json.dumps(value).encode()


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def outside_record(tmp_path: Path) -> Path:
    target = tmp_path / "outside" / f"{BAD_ID}.json"
    write(target, json.dumps(good_record(BAD_ID)).encode())
    return target


# name -> how to plant it in a folder (records/ or dlq/): (folder, tmp_path) -> file name planted.
def plant_bytes(data: bytes, name: str | None = None):
    def plant(folder: Path, tmp_path: Path) -> str:
        file_name = name or f"{BAD_ID}.json"
        write(folder / file_name, data)
        return file_name

    return plant


def plant_dir(folder: Path, tmp_path: Path) -> str:
    (folder / f"{BAD_ID}.json").mkdir(parents=True)
    return f"{BAD_ID}.json"


def plant_fifo(folder: Path, tmp_path: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / f"{BAD_ID}.json")
    return f"{BAD_ID}.json"


def plant_link(target):
    def plant(folder: Path, tmp_path: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        where = target(tmp_path) if callable(target) else target
        os.symlink(where, folder / f"{BAD_ID}.json")
        return f"{BAD_ID}.json"

    return plant


def plant_loop(folder: Path, tmp_path: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(f"{BAD_ID}.json", folder / f"{BAD_ID}.json")
    return f"{BAD_ID}.json"


def plant_huge(folder: Path, tmp_path: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{BAD_ID}.json", "wb") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse: 64 MiB of NUL bytes, past every cap
    return f"{BAD_ID}.json"


def plant_device(folder: Path, tmp_path: Path) -> str:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    folder.mkdir(parents=True, exist_ok=True)
    os.mknod(folder / f"{BAD_ID}.json", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    return f"{BAD_ID}.json"


COMMON = {
    "bad JSON": plant_bytes(b"{not json"),
    "empty file": plant_bytes(b""),
    "JSON array": plant_bytes(b"[1, 2, 3]"),
    "JSON string": plant_bytes(b'"a record"'),
    "not UTF-8": plant_bytes(b"\xff\xfe{}"),
    "deeply nested": plant_bytes(b"[" * 200_000 + b"]" * 200_000),
    "huge number": plant_bytes(b'{"n": ' + b"9" * 100_000 + b"}"),
    "escape sequences as JSON": plant_bytes(b"\x1b[2J\x1b]0;pwned\x07"),
    "directory": plant_dir,
    "FIFO": plant_fifo,
    "symlink to a device": plant_link("/dev/zero"),
    "device node": plant_device,
    "symlink outside the store": plant_link(outside_record),
    "dangling symlink": plant_link("/nonexistent/record.json"),
    "symlink loop": plant_loop,
    "huge file": plant_huge,
}

RECORD_KINDS = {
    **COMMON,
    "wrong shape": plant_bytes(json.dumps({"build_id": BAD_ID}).encode()),
    "unknown field": plant_bytes(record_json(extra="x")),
    "wrong status": plant_bytes(record_json(status="passed")),
    "wrong type": plant_bytes(record_json(tests="none")),
    "build_id with slash": plant_bytes(record_json(build_id="../../etc/passwd")),
    "build_id not the file name": plant_bytes(record_json(build_id=GOOD_ID[:-1] + "f")),
    "bad finished_at": plant_bytes(record_json(finished_at="yesterday")),
    "finished_at out of range": plant_bytes(record_json(finished_at="99999-01-01T00:00:00Z")),
    "manifest_id escapes": plant_bytes(record_json(manifest_id="../../x")),
    "manifest_id percent-encoded": plant_bytes(record_json(manifest_id="%2e%2e")),
    "platform with escape": plant_bytes(record_json(platform=f"linux/amd64{ESC}[31m")),
    "digest with newline": plant_bytes(
        record_json(image={"ref": "x/y:z", "digest": "sha256:" + "a" * 64 + "\nRUN evil"})
    ),
    "file name not an id": plant_bytes(record_json(), name="a b.json"),
    "file name with escape": plant_bytes(record_json(), name=f"{ESC}[2J.json"),
    "file name too long": plant_bytes(record_json(), name="a" * 200 + ".json"),
}

LETTER_KINDS = {
    **COMMON,
    "wrong shape": plant_bytes(json.dumps({"key": BAD_ID}).encode()),
    "key not the file name": None,  # filled below: needs a letter
    "unknown field": None,
}


def letter(key: str = LETTER_KEY, **overrides) -> dict:
    value = {
        "dlq_version": 1,
        "key": key,
        "reason": "retries_exhausted",
        "build_id": key,
        "run_id": "run-1",
        "job_name": None,
        "manifest_id": "llm_factory",
        "platform": "linux/arm64",
        "pool": "arm64",
        "stage": "build",
        "error": "registry down",
        "message": "registry down",
        "transient": True,
        "attempts": 3,
        "log_tail": "",
        "failed_at": "2026-11-27T00:00:00.000000Z",
    }
    value.update(overrides)
    return value


LETTER_KINDS["key not the file name"] = plant_bytes(json.dumps(letter(key=GOOD_ID)).encode())
LETTER_KINDS["unknown field"] = plant_bytes(json.dumps(letter(key=BAD_ID, extra=1)).encode())


def snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    """Every entry under root (not following links, never opening non-regular files), except the
    records index and the store-check cache: derived caches that any reader may build."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        cache = root / "data" / "cache"
        if here == skip or skip in here.parents or here == cache or cache in here.parents:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = here / name
            if path == skip or name.startswith(SQLITE_NAME) or path == root / "data" / "cache":
                continue
            st = os.lstat(path)
            content = None
            if stat.S_ISREG(st.st_mode) and st.st_size < 1024 * 1024:
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            seen[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_size, content)
    return seen


def run(tmp_path: Path, *args: str):
    data = tmp_path / "data"
    env = {
        "FACTORY_DATA_DIR": str(data),
        "DAGSTER_HOME": str(data / "dagster"),
        "FACTORY_MANIFEST_STORE": str(REPO / "control_plane" / "data" / "manifest.json"),
        "FACTORY_REGISTRY": "127.0.0.1:9",  # nothing answers: no registry is contacted here
        "DOCKER_HOST": None,  # unset: the engine lookup only checks socket paths
        "FACTORY_S3_BUCKET": "",
    }
    before = snapshot(tmp_path, data / "dagster")
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=True)
    assert snapshot(tmp_path, data / "dagster") == before, "the command changed files"
    text = result.output + (result.stderr or "")
    assert "Traceback" not in text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert ESC not in text, "a raw terminal escape reached the output"
    return result


READERS = [
    ("records",),
    ("records", "--json"),
    ("matrix",),
    ("matrix", "--format", "json"),
    ("status", "--json"),
    ("gc", "--dry-run"),
]


def plant_records(tmp_path: Path, kind: str, *, with_good: bool) -> str:
    records = tmp_path / "data" / "records"
    records.mkdir(parents=True)
    if with_good:
        LocalRecordStore(tmp_path / "data").put_json("record", GOOD_ID, good_record())
    return RECORD_KINDS[kind](records, tmp_path)


@pytest.mark.parametrize("kind", sorted(RECORD_KINDS))
@pytest.mark.parametrize("command", READERS, ids=lambda c: " ".join(c))
def test_a_bad_record_is_skipped_and_reported(tmp_path, kind, command):
    # gc looks up every good record's repository: with no registry here, only the bad one.
    with_good = command[0] != "gc"
    name = plant_records(tmp_path, kind, with_good=with_good)
    result = run(tmp_path, *command)
    assert result.exit_code == 0, result.output
    shown = name.replace(ESC, "\\x1b")[:60]  # overlong names are shown cut
    assert f"warning: skipped {tmp_path / 'data' / 'records' / shown}" in result.stderr
    assert "1 unreadable entry in" in result.stderr
    assert result.stderr.count(f"warning: skipped {tmp_path}") == 1
    if with_good and command[0] == "records":
        assert GOOD_ID in result.stdout
        assert BAD_ID not in result.stdout


@pytest.mark.parametrize(
    "kind",
    sorted(k for k in RECORD_KINDS if not k.startswith("file name")),
)
def test_verify_of_a_bad_record_names_the_file(tmp_path, kind):
    plant_records(tmp_path, kind, with_good=True)
    result = run(tmp_path, "verify", "--no-registry", BAD_ID)
    assert result.exit_code == 1
    assert f"{tmp_path / 'data' / 'records' / BAD_ID}.json" in result.output
    assert "does not verify: record" in result.stderr


def test_records_folder_that_is_a_file_is_reported(tmp_path):
    write(tmp_path / "data" / "records", b"not a folder")
    result = run(tmp_path, "records")
    assert result.exit_code == 0
    assert "records: not a directory" in result.stderr
    assert "0 records in" in result.stdout


def test_records_folder_linked_outside_is_not_followed(tmp_path):
    outside_record(tmp_path)
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "data" / "records")
    result = run(tmp_path, "records")
    assert result.exit_code == 0
    assert "to outside" in result.stderr and "not followed" in result.stderr
    assert BAD_ID not in result.stdout


def test_a_record_with_escapes_in_free_text_is_listed_harmlessly(tmp_path):
    from factory.records.model import ErrorInfo

    error = ErrorInfo(stage="build", message=f"{ESC}]0;pwned{ESC}\\{ESC}[2J boom")
    store = LocalRecordStore(tmp_path / "data")
    store.write_record(make_record(build_id=GOOD_ID, status="error", error=error))
    for command in (("records",), ("records", "--json"), ("matrix", "--format", "json")):
        result = run(tmp_path, *command)
        assert result.exit_code == 0
        assert "warning" not in result.stderr
        assert GOOD_ID in result.stdout


OVERLONG_OR_BAD_IDS = {
    "5000 characters": "a" * 5000,
    "300 characters": "b" * 300,
    "path escape": "../records/x",
    "absolute path": "/etc/passwd",
    "slash": "x/y",
    "leading dot": ".hidden",
    "escape sequence": f"{ESC}[2J",
    "NUL byte": "a\x00b",
    "newline": "a\nb",
    "empty": "",
}


@pytest.mark.parametrize("name", sorted(OVERLONG_OR_BAD_IDS))
def test_verify_refuses_ids_that_cannot_name_a_file(tmp_path, name):
    result = run(tmp_path, "verify", "--no-registry", OVERLONG_OR_BAD_IDS[name])
    assert result.exit_code == 1
    assert "is not a build id" in result.stderr
    assert len(result.stderr) < 1000


@pytest.mark.parametrize("name", sorted(OVERLONG_OR_BAD_IDS))
def test_dlq_requeue_refuses_ids_that_cannot_name_a_file(tmp_path, name):
    result = run(tmp_path, "dlq", "requeue", OVERLONG_OR_BAD_IDS[name])
    assert result.exit_code == 1
    assert "no dead letter" in result.stderr and "invalid build_id" in result.stderr
    assert len(result.stderr) < 1000


def plant_letters(tmp_path: Path, kind: str) -> str:
    folder = tmp_path / "data" / "dlq"
    folder.mkdir(parents=True)
    LocalRecordStore(tmp_path / "data").put_json("dlq", LETTER_KEY, letter())
    return LETTER_KINDS[kind](folder, tmp_path)


@pytest.mark.parametrize("kind", sorted(LETTER_KINDS))
@pytest.mark.parametrize("command", [("dlq", "list"), ("dlq", "list", "--json")], ids=" ".join)
def test_a_bad_dead_letter_is_skipped_and_reported(tmp_path, kind, command):
    name = plant_letters(tmp_path, kind)
    result = run(tmp_path, *command)
    assert result.exit_code == 0
    shown = name.replace(ESC, "\\x1b")
    assert f"warning: skipped {tmp_path / 'data' / 'dlq' / shown}" in result.stderr
    assert "1 unreadable entry in" in result.stderr
    assert LETTER_KEY in result.stdout


@pytest.mark.parametrize("kind", ["bad JSON", "FIFO", "symlink outside the store", "huge file"])
def test_requeue_of_a_bad_dead_letter_is_refused_before_anything_runs(tmp_path, kind):
    plant_letters(tmp_path, kind)
    result = run(tmp_path, "dlq", "requeue", BAD_ID)
    assert result.exit_code == 1
    assert f"dead letter {tmp_path / 'data' / 'dlq' / BAD_ID}.json" in result.stderr
    assert "cannot read it" in result.stderr


def test_status_counts_a_bad_dead_letter_without_breaking(tmp_path):
    plant_letters(tmp_path, "FIFO")
    result = run(tmp_path, "status", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report  # the queue report is there


@pytest.mark.parametrize("kind", ["bad JSON", "FIFO", "symlink to a device"])
def test_an_unreadable_requeue_marker_still_claims_the_letter(tmp_path, kind):
    folder = tmp_path / "data" / "dlq"
    folder.mkdir(parents=True)
    LocalRecordStore(tmp_path / "data").put_json("dlq", LETTER_KEY, letter())
    marker = folder / f"{LETTER_KEY}.requeued.json"
    if kind == "bad JSON":
        write(marker, b"{nope")
    elif kind == "FIFO":
        os.mkfifo(marker)
    else:
        os.symlink("/dev/zero", marker)
    result = run(tmp_path, "dlq", "list")
    assert result.exit_code == 0
    assert f"{LETTER_KEY}  requeued" in result.stdout
    assert "warning: requeue marker" in result.stderr


def test_escapes_in_a_dead_letter_are_shown_escaped(tmp_path):
    store = LocalRecordStore(tmp_path / "data")
    store.put_json(
        "dlq", LETTER_KEY, letter(error=f"{ESC}[2J{ESC}]0;pwned\x07", stage=f"{ESC}[31m")
    )
    result = run(tmp_path, "dlq", "list")
    assert result.exit_code == 0
    assert "\\x1b[2J" in result.stdout


@pytest.mark.parametrize("hours", ["nan", "NaN", "inf", "-inf", "1e308", "0", "-1", "abc"])
def test_status_refuses_a_window_that_is_not_a_number_of_hours(tmp_path, hours):
    result = run(tmp_path, "status", "--window-hours", hours)
    assert result.exit_code == 2
    assert "Invalid value for '--window-hours'" in result.stderr


def test_status_takes_the_longest_window(tmp_path):
    plant_records(tmp_path, "bad finished_at", with_good=True)
    result = run(tmp_path, "status", "--json", "--window-hours", "878400")
    assert result.exit_code == 0
    assert "bad finished_at" not in result.stderr  # the reason is named, not the content
    assert "field finished_at: not a UTC ISO 8601 time" in result.stderr
