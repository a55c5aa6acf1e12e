"""A small Dockerfile parser that reads a Dockerfile the way BuildKit does.

It follows BuildKit's own (moby/buildkit `frontend/dockerfile/parser`): lines end at `\\n` only (a
trailing `\\r` is dropped), a backslash at the end of a line continues it, comment and empty
lines inside a continued instruction are skipped, parser directives (`# syntax=`, `# escape=`,
`# check=`) are read only before anything else (`leading_directives`, which also reads `//`, as
BuildKit's `DetectSyntax` does), the first word is the instruction (split at ASCII whitespace),
leading `--flag` words are its flags (quotes and escapes as BuildKit reads them), and
`RUN`/`COPY`/`ADD` (also under `ONBUILD`, not in JSON form) may carry heredocs (`<<EOF`, `<<-EOF`,
`<<"EOF"`, `2<<EOF`) whose bodies run to a line equal to the word; `parse(heredocs=False)` reads
as engines without heredocs do. The rules a Dockerfile must follow are `factory.store.dockerfile`.

No Dagster or Jinja import: this is pure text.
"""

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

INSTRUCTIONS = frozenset(
    {
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    }
)
HEREDOC_INSTRUCTIONS = frozenset({"ADD", "COPY", "RUN"})
DIRECTIVE_NAMES = frozenset({"syntax", "escape", "check"})

_DIRECTIVE = re.compile(r"\A\s*(?:#|//)\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*\Z")
CONTINUATION = re.compile(r"([^\\])\\[ \t]*$|^\\[ \t]*$")
_SPLIT = re.compile(r"[\t\v\f\r ]+")
_HEREDOC_WORD = re.compile(r"\A(\d*)<<(-?)\s*([^<]*)\Z")

# Bytes Go's unicode.IsSpace accepts when BuildKit walks a flag word byte by byte.
_GO_BYTE_SPACES = frozenset(b"\t\n\v\f\r \x85\xa0")
ENDS_CONTINUED = "the file ends inside a continued line"


@dataclass(frozen=True)
class Instruction:
    """One instruction: its first and last line (1-based), keyword (upper case), flags, rest."""

    line: int
    end_line: int
    keyword: str
    flags: tuple[str, ...]
    args: str
    heredoc_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Directive:
    line: int
    name: str  # lower case
    value: str


@dataclass
class Parsed:
    instructions: list[Instruction] = field(default_factory=list)
    directives: list[Directive] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, message)


def shown(text: str, limit: int = 80) -> str:
    """Some text JSON-quoted for a message, cut at `limit` characters."""
    return json.dumps(text[:limit] + ("..." if len(text) > limit else ""))


def is_comment(line: str) -> bool:
    """Whether a line is a comment (BuildKit skips them, also inside a continued instruction)."""
    return line.lstrip().startswith("#")


def leading_directives(lines: list[str]) -> list[Directive]:
    """Every directive-shaped comment of the leading block (comments and blank lines)."""
    found = []
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not stripped:
            continue
        if not (stripped.startswith("#") or stripped.startswith("//")):
            break
        match = _DIRECTIVE.match(raw)
        if match and match.group(1).lower() in DIRECTIVE_NAMES:
            found.append(Directive(number, match.group(1).lower(), match.group(2)))
    return found


def directive_comments(lines: list[str]) -> list[Directive]:
    """Every directive-shaped comment anywhere (for fragments, which may be placed first)."""
    found = []
    for number, raw in enumerate(lines, start=1):
        match = _DIRECTIVE.match(raw)
        if match and match.group(1).lower() in DIRECTIVE_NAMES:
            found.append(Directive(number, match.group(1).lower(), match.group(2)))
    return found


def _builder_flags(rest: str) -> tuple[list[str], str]:
    """BuildKit's extractBuilderFlags: leading `--flag` words (quotes and `\\` as it reads them)."""
    data = rest.encode("utf-8", "surrogatepass")
    words: list[str] = []
    pos, size = 0, len(data)
    while True:
        while pos < size and data[pos] in _GO_BYTE_SPACES:
            pos += 1
        if pos >= size:
            return words, ""
        if not (data[pos : pos + 2] == b"--" and pos + 1 < size):
            return words, data[pos:].decode("utf-8", "replace")
        word = bytearray()
        blank_ok = False
        quote = 0
        while pos < size:
            ch = data[pos]
            if ch == 0x5C:  # a backslash takes the next byte as it is, in quotes or not
                if pos + 1 < size:
                    pos += 1
                    word.append(data[pos])
            elif quote:
                if ch == quote:
                    quote = 0
                else:
                    word.append(ch)
            elif ch in _GO_BYTE_SPACES:
                break
            elif ch in (0x27, 0x22):
                quote = ch
                blank_ok = True
            else:
                word.append(ch)
            pos += 1
        text = word.decode("utf-8", "replace")
        if text == "--":
            return words, data[pos:].decode("utf-8", "replace")
        if blank_ok or text:
            words.append(text)


def _quoted_scan(text: str) -> Iterator[tuple[str, str, bool]]:
    """(raw, literal, blank) for each piece of `text` as a shell-like word reader sees it.

    Quotes are `'` or `"`; a backslash escapes the next character outside quotes and inside
    double quotes. `raw` is the piece as written (an escape is two characters), `literal` what it
    stands for (a quote character stands for nothing), `blank` whether it is whitespace outside
    quotes, where words end.
    """
    quote, i = "", 0
    while i < len(text):
        ch = text[i]
        escaped = ch == "\\" and i + 1 < len(text) and quote != "'"
        if escaped:
            i += 1
            yield ch + text[i], text[i], False
        elif quote:
            closing = ch == quote
            if closing:
                quote = ""
            yield ch, "" if closing else ch, False
        elif ch in "'\"":
            quote = ch
            yield ch, "", False
        else:
            yield ch, ch, ch.isspace()
        i += 1


def _lex_words(line: str) -> list[str]:
    """Words of a line with quotes and escapes kept (for finding heredoc words)."""
    words, current = [], []
    for raw, _, blank in _quoted_scan(line):
        if blank:
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(raw)
    if current:
        words.append("".join(current))
    return words


def _unquote(word: str) -> str | None:
    """The word with its quotes and escapes removed; None when it is not one word."""
    out = []
    for _, literal, blank in _quoted_scan(word):
        if blank:
            return None
        out.append(literal)
    return "".join(out)


def _heredocs(keyword: str, args: str, logical: str) -> list[tuple[str, bool]]:
    """(terminator, chomp) for each heredoc an instruction opens, as BuildKit finds them."""
    if keyword == "ONBUILD":
        sub = _SPLIT.split(args.strip(), maxsplit=1)
        if not sub or sub[0].upper() not in HEREDOC_INSTRUCTIONS:
            return []
        keyword = sub[0].upper()
        args = sub[1] if len(sub) > 1 else ""
    if keyword not in HEREDOC_INSTRUCTIONS or "<<" not in logical:
        return []
    if args.startswith("["):
        try:
            value = json.loads(args)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return []  # JSON form: no heredocs
    found = []
    for word in _lex_words(logical):
        match = _HEREDOC_WORD.match(word)
        if not match or not match.group(3):
            continue
        name = _unquote(match.group(3))
        if name:
            found.append((name, match.group(2) == "-"))
    return found


def parse(text: str, *, heredocs: bool = True) -> Parsed:
    """Instructions, leading directives and parse problems of a Dockerfile (or a fragment)."""
    out = Parsed()
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out.directives = leading_directives(lines)
    count = len(lines)
    i = 0
    while i < count:
        first = lines[i].rstrip("\r\n").lstrip()
        start = i + 1
        i += 1
        if not first or first.startswith("#"):
            continue
        parts = []
        current = first
        while True:
            continued = 0
            if current.rstrip(" \t").endswith("\\"):
                joined, continued = CONTINUATION.subn(r"\1", current)
            if not continued:
                parts.append(current)
                break
            parts.append(joined)
            while i < count and (is_comment(lines[i]) or not lines[i].strip()):
                i += 1
            if i >= count:
                out.problems.append((start, ENDS_CONTINUED + " ('\\' at end)"))
                break
            current = lines[i].rstrip("\r\n")
            i += 1
        logical = "".join(parts).strip()
        words = _SPLIT.split(logical, maxsplit=1)
        keyword = words[0].upper()
        flags, args = _builder_flags(words[1]) if len(words) > 1 else ([], "")
        names: list[str] = []
        if heredocs:
            for name, chomp in _heredocs(keyword, args, logical):
                names.append(name)
                while i < count:
                    candidate = lines[i].rstrip("\r\n")
                    i += 1
                    if (candidate.lstrip("\t") if chomp else candidate) == name:
                        break
                else:
                    out.problems.append(
                        (start, f"heredoc {shown(name)} is not terminated (no line {name!r})")
                    )
        out.instructions.append(
            Instruction(start, max(i, start), keyword, tuple(flags), args.strip(), tuple(names))
        )
    return out
