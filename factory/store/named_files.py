"""The files a store names, read safely: inside the store's folder, bounded, each read once.

Owns the rules for a template, fragment or test-suite path: relative, `/`-separated, no `..` out
of the folder and no symlink or hard link out of it, a regular file of at most `MAX_FILE_BYTES`,
valid UTF-8, and all of one load's reading within `MAX_TOTAL_BYTES`; a file reached under two
spellings is read once.
"""

import errno
import hashlib
import json
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from factory.errors import Problem
from factory.store.references import StoreView
from factory.store.store_json import line_column
from factory.store.store_messages import location

# Templates, fragments and test suites are short text files.
MAX_FILE_BYTES = 1024 * 1024
# Everything one load reads (the JSON and every distinct file it names, each counted once).
MAX_TOTAL_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class StoreFile:
    """A file the store names, read and hashed."""

    rel_path: str
    text: str
    sha256: str


def named_files(view: StoreView) -> list[tuple[str, str]]:
    """(field path, relative file path) for every valid entry's file."""
    named = []
    for name, template in (view.templates or {}).items():
        if template is not None:
            named.append((location("templates", name, "path"), template.path))
    for name, versions in (view.modules or {}).items():
        for version, module in (versions or {}).items():
            if module is not None:
                named.append((location("modules", name, version, "path"), module.path))
    for name, suite in (view.test_suites or {}).items():
        if suite is not None:
            named.append((location("test_suites", name, "path"), suite.path))
    return named


@dataclass
class Reader:
    """What one load has read: bytes so far, and each file by (device, inode), read once."""

    total: int = 0
    seen: dict[tuple[int, int], StoreFile] = field(default_factory=dict)


def read_named_file(
    root: Path, real_root: Path, file: str, where: str, rel: str, reader: Reader
) -> tuple[StoreFile | None, Problem | None]:
    def problem(message: str) -> tuple[None, Problem]:
        return None, Problem(file, where, message)

    shown = json.dumps(rel)
    if rel.endswith("/"):
        return problem(f"{shown} ends with '/'; name a file, without a trailing slash")
    if rel.startswith("/"):
        return problem(f"{shown} is absolute; paths are relative to the store's folder {root}")
    if "\\" in rel:
        return problem(f"{shown} contains '\\'; separate folders with '/'")
    if _escapes(rel):
        return problem(f"{shown} leaves the store's folder with '..'; paths must stay inside it")
    candidate = root / rel
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        if candidate.is_symlink():
            return problem(f"{shown} is a symlink to a file that does not exist")
        return problem(f"no such file {shown} in {root}")
    except NotADirectoryError:
        return problem(f"{shown}: a part of the path is a file, not a folder")
    except RuntimeError:  # Python 3.11/3.12 report a symlink loop this way
        return problem(f"{shown} cannot be resolved: symlink loop")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return problem(f"{shown} cannot be resolved: symlink loop")
        return problem(f"{shown} cannot be resolved: {exc.strerror or exc}")
    if not resolved.is_relative_to(real_root):
        return problem(
            f"{shown} leaves the store's folder through a symlink (it points to {resolved}); "
            "paths must stay inside it"
        )
    try:
        st = resolved.stat()
    except OSError as exc:
        return problem(f"{shown} cannot be read: {exc.strerror or exc}")
    if stat.S_ISDIR(st.st_mode):
        return problem(f"{shown} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        return problem(f"{shown} is not a regular file")
    if st.st_nlink > 1:
        return problem(
            f"{shown} has {st.st_nlink} hard links; a file the store names must have one "
            "(a hard link can reach a file outside the store)"
        )
    if st.st_size > MAX_FILE_BYTES:
        return problem(
            f"{shown} is {st.st_size} bytes; files the store names may be at most {MAX_FILE_BYTES}"
        )
    same = reader.seen.get((st.st_dev, st.st_ino))
    if same is not None:  # the same file under another spelling: read once
        return StoreFile(rel, same.text, same.sha256), None
    if reader.total + st.st_size > MAX_TOTAL_BYTES:
        return problem(
            f"{shown} would take the bytes read from the store past {MAX_TOTAL_BYTES} "
            f"({reader.total} read so far); a store and its files may be at most that"
        )
    try:
        with resolved.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return problem(f"{shown} cannot be read: {exc.strerror or exc}")
    reader.total += len(data)
    if len(data) > MAX_FILE_BYTES:
        return problem(f"{shown} is over {MAX_FILE_BYTES} bytes, the most a named file may have")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return problem(
            f"{shown} is not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}, "
            f"{line_column(data, exc.start)})"
        )
    read = StoreFile(rel, text, hashlib.sha256(data).hexdigest())
    reader.seen[(st.st_dev, st.st_ino)] = read
    return read, None


def _escapes(rel: str) -> bool:
    """Whether `rel`, read without following symlinks, climbs above its starting folder."""
    depth = 0
    for part in PurePosixPath(rel).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part != ".":
            depth += 1
    return False
