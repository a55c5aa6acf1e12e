"""Reading files and entries Factory did not necessarily write: safely, boundedly, quietly.

Records, dead letters and the other JSON files under the data dir may be damaged, replaced or
planted. `read_bytes` reads one only when it is a regular file inside the given root, at most
`max_bytes` long: a symbolic link is followed only when its target stays inside the root, a
directory, FIFO, socket or device is never opened (so nothing blocks), and the file is opened
with O_NOFOLLOW | O_NONBLOCK and checked again with fstat so a swap between the check and the
open is noticed. `parse_json` turns bytes into JSON without ever echoing them: errors name the
file and the line/column, not the content. Every refusal is an `UnreadableEntryError`, a
FactoryError (and a ValueError) that names the file.

`printable` makes any text safe to print on a terminal (control characters, escape sequences
and bidi overrides shown as `\\xNN`/`\\uNNNN`), for messages and listings.

No Dagster import.
"""

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from factory.errors import FactoryError

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
# C0 and C1 control characters (ESC included), DEL, and the bidi embedding/override/isolate marks
# that reorder what a terminal shows.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class UnreadableEntryError(FactoryError, ValueError):
    """A file or store entry that is refused or invalid; `path` names it, `reason` says why.

    Also a ValueError, so code that treats a bad value as "not readable" keeps working.
    """

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{printable(self.path, limit=300)}: {reason}")


def printable(value: object, *, limit: int | None = None) -> str:
    """`value` as text a terminal shows literally; cut to `limit` characters (with `...`)."""
    text = value if isinstance(value, str) else repr(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return _UNPRINTABLE.sub(_escape, text)


def exception_line(exc: BaseException, *, limit: int = 300) -> str:
    """The first line of `exc`'s message, printable and cut to `limit` ("" when it has none):
    what a one-line report of an error from a library shows of it."""
    lines = str(exc).strip().splitlines()
    return printable(lines[0].strip() if lines else "", limit=limit)


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link that does not resolve"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def read_bytes(
    path: Path | str, *, root: Path | str | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, inside `root` when one is given.

    FileNotFoundError when nothing is there (callers decide what a missing file means);
    UnreadableEntryError for everything else that is wrong.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnreadableEntryError(path, f"cannot be read ({exc.strerror})") from None
    target = os.fspath(path)
    if root is not None or stat.S_ISLNK(st.st_mode):
        try:
            real = os.path.realpath(path)
        except OSError as exc:
            raise UnreadableEntryError(path, f"cannot be resolved ({exc.strerror})") from None
        if root is None:
            raise UnreadableEntryError(path, "is a symbolic link, which is not followed")
        real_root = os.path.realpath(root)
        if not _inside(real, real_root):
            what = "is a symbolic link" if stat.S_ISLNK(st.st_mode) else "lies in a folder linked"
            raise UnreadableEntryError(path, f"{what} to outside {real_root}: not followed")
        if stat.S_ISLNK(st.st_mode):
            try:
                st = os.lstat(real)
            except OSError:
                raise UnreadableEntryError(path, "is a dangling symbolic link") from None
            target = real
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableEntryError(path, f"is {_kind(st.st_mode)}, not a regular file: not opened")
    if st.st_size > max_bytes:
        raise UnreadableEntryError(
            path, f"is {st.st_size} bytes, more than the {max_bytes} bytes read for it"
        )
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnreadableEntryError(path, f"cannot be opened ({exc.strerror})") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
            st.st_dev,
            st.st_ino,
        ):
            raise UnreadableEntryError(path, "was replaced while it was being opened")
        chunks = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, _READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise UnreadableEntryError(path, f"cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise UnreadableEntryError(path, f"grew past the {max_bytes} bytes read for it")
    return data


def parse_json(data: bytes, where: object) -> Any:
    """JSON from bytes; UnreadableEntryError naming `where` and the position, never the content."""
    try:
        return json.loads(data)
    except UnicodeDecodeError as exc:
        reason = f"is not UTF-8 text (byte {exc.start})"
    except json.JSONDecodeError as exc:
        reason = f"is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
    except ValueError as exc:  # numbers too long to convert, and the like
        reason = f"is not JSON Factory can read ({type(exc).__name__})"
    except RecursionError:
        reason = "nests JSON too deeply"
    raise UnreadableEntryError(where, reason)


def read_json(
    path: Path | str, *, root: Path | str | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> Any:
    """Parsed JSON of a file read with `read_bytes` (same checks, same errors)."""
    return parse_json(read_bytes(path, root=root, max_bytes=max_bytes), path)
