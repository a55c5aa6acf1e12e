"""A small Dockerfile parser, and the rules a rendered Dockerfile and a fragment must follow.

The parser follows BuildKit's own (moby/buildkit `frontend/dockerfile/parser`): lines end at
`\\n` only (a trailing `\\r` is dropped), a backslash at the end of a line continues it, comment
and empty lines inside a continued instruction are skipped, parser directives (`# syntax=`,
`# escape=`, `# check=`) are read only before anything else, the first word is the instruction
(split at ASCII whitespace), leading `--flag` words are its flags (quotes and escapes as BuildKit
reads them), and `RUN`/`COPY`/`ADD` (also under `ONBUILD`, not in JSON form) may carry heredocs
(`<<EOF`, `<<-EOF`, `<<"EOF"`, `2<<EOF`) whose bodies run to a line equal to the word.

The checks are written to refuse whatever some BuildKit could read as an escape from the pinned
base, so where versions differ they take the stricter reading:

- parser directives are looked for in the whole leading block of comments, blank lines included,
  with `#` or `//` (BuildKit's `DetectSyntax` reads `// syntax=` too);
- every check on `FROM`, `COPY --from` and `RUN --mount=...,from=` runs twice: once with heredoc
  bodies as data (BuildKit >= 0.10, Dockerfile 1.4) and once with every line as an instruction
  (older engines, such as Docker 20.10's builtin frontend, have no heredocs);
- control characters (other than tab, and carriage return before a line end) are refused, so
  Python and Go cannot disagree on where a line or a word ends.

No Dagster or Jinja import: this is pure text.
"""

import csv
import json
import re
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
# BuildKit reads one physical line into a 64 KiB buffer and fails past it.
MAX_LINE_BYTES = 64 * 1024 - 1

_DIRECTIVE = re.compile(r"\A\s*(?:#|//)\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*\Z")
_CONTINUATION = re.compile(r"([^\\])\\[ \t]*$|^\\[ \t]*$")
_SPLIT = re.compile(r"[\t\v\f\r ]+")
_HEREDOC_WORD = re.compile(r"\A(\d*)<<(-?)\s*([^<]*)\Z")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_STAGE_NAME = re.compile(r"\A[a-z][a-z0-9._-]*\Z")
# Bytes Go's unicode.IsSpace accepts when BuildKit walks a flag word byte by byte.
_GO_BYTE_SPACES = frozenset(b"\t\n\v\f\r \x85\xa0")
_ENDS_CONTINUED = "the file ends inside a continued line"


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


def _shown(text: str, limit: int = 80) -> str:
    return json.dumps(text[:limit] + ("..." if len(text) > limit else ""))


def _is_comment(line: str) -> bool:
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
            if quote:
                if ch == quote:
                    quote = 0
                elif ch == 0x5C:  # backslash
                    if pos + 1 < size:
                        pos += 1
                        word.append(data[pos])
                else:
                    word.append(ch)
                pos += 1
                continue
            if ch in _GO_BYTE_SPACES:
                break
            if ch in (0x27, 0x22):
                quote = ch
                blank_ok = True
            elif ch == 0x5C:
                if pos + 1 < size:
                    pos += 1
                    word.append(data[pos])
            else:
                word.append(ch)
            pos += 1
        text = word.decode("utf-8", "replace")
        if text == "--":
            return words, data[pos:].decode("utf-8", "replace")
        if blank_ok or text:
            words.append(text)


def _lex_words(line: str) -> list[str]:
    """Words of a line with quotes and escapes kept (for finding heredoc words)."""
    words, current, quote, i = [], [], "", 0
    while i < len(line):
        ch = line[i]
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"' and i + 1 < len(line):
                i += 1
                current.append(line[i])
        elif ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
            if ch in "'\"":
                quote = ch
            elif ch == "\\" and i + 1 < len(line):
                i += 1
                current.append(line[i])
        i += 1
    if current:
        words.append("".join(current))
    return words


def _unquote(word: str) -> str | None:
    """The word with its quotes and escapes removed; None when it is not one word."""
    out, quote, i = [], "", 0
    while i < len(word):
        ch = word[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"' and i + 1 < len(word):
                i += 1
                out.append(word[i])
            else:
                out.append(ch)
        elif ch in "'\"":
            quote = ch
        elif ch == "\\" and i + 1 < len(word):
            i += 1
            out.append(word[i])
        elif ch.isspace():
            return None
        else:
            out.append(ch)
        i += 1
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
                joined, continued = _CONTINUATION.subn(r"\1", current)
            if not continued:
                parts.append(current)
                break
            parts.append(joined)
            while i < count and (_is_comment(lines[i]) or not lines[i].strip()):
                i += 1
            if i >= count:
                out.problems.append((start, _ENDS_CONTINUED + " ('\\' at end)"))
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
                        (start, f"heredoc {_shown(name)} is not terminated (no line {name!r})")
                    )
        out.instructions.append(
            Instruction(start, max(i, start), keyword, tuple(flags), args.strip(), tuple(names))
        )
    return out


def _text_problems(text: str) -> list[tuple[int, str]]:
    problems = []
    if not text:
        return []
    longest = max(map(len, text.split("\n")))
    if longest * 4 <= MAX_LINE_BYTES and not _CONTROL.search(text.replace("\r\n", "\n")):
        return []
    for number, line in enumerate(text.split("\n"), start=1):
        body = line[:-1] if line.endswith("\r") else line
        bad = _CONTROL.search(body)
        if bad:
            problems.append(
                (number, f"contains the control character U+{ord(bad.group()):04X}; remove it")
            )
        if len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
            problems.append((number, f"is longer than {MAX_LINE_BYTES} bytes (BuildKit's limit)"))
        if len(problems) >= 20:
            break
    return problems


def _mount_sources(flag_value: str) -> list[str]:
    """The `from=` values of a `--mount=` spec (CSV, as BuildKit reads it)."""
    try:
        fields = next(csv.reader([flag_value]), [])
    except csv.Error:
        return ["<unreadable --mount value>"]
    sources = []
    for item in fields:
        key, _, value = item.partition("=")
        if key.strip().lower() == "from":
            sources.append(value)
    return sources


def _source_problem(source: str, stages: list[str], index: int) -> str | None:
    """None when `source` names an earlier stage (by name or number) of this Dockerfile."""
    if source and (source.lower() in stages[:index] or (source.isdigit() and int(source) < index)):
        return None
    return (
        f"copies or mounts from {_shown(source)}, which is not an earlier stage of this "
        "Dockerfile; only the pinned base and stages built on it may be used"
    )


def _base_problems(parsed: Parsed, base: str, *, structure: bool) -> list[tuple[int, str]]:
    """The pinned-base rule over the instructions; `structure` adds the order/ARG rules."""
    problems: list[tuple[int, str]] = []
    stages: list[str] = []  # stage names (lower case), "" for unnamed, in order
    seen_from = False
    for ins in parsed.instructions:
        if ins.keyword == "FROM":
            words = ins.args.split()
            if ins.flags:
                problems.append(
                    (
                        ins.line,
                        f"FROM takes no flags here ({', '.join(ins.flags)}); "
                        "write FROM {{ base }}",
                    )
                )
            image = words[0] if words else ""
            name = ""
            if len(words) == 3 and words[1].lower() == "as":
                name = words[2].lower()
                if not _STAGE_NAME.match(name):
                    problems.append((ins.line, f"stage name {_shown(words[2])} is not valid"))
                elif name in stages:
                    problems.append((ins.line, f"stage name {_shown(words[2])} is used twice"))
            elif len(words) != 1:
                problems.append(
                    (ins.line, f"FROM {_shown(ins.args)}: expected FROM <image> [AS <name>]")
                )
            if image != base and image.lower() not in stages:
                problems.append(
                    (
                        ins.line,
                        f"FROM {_shown(image)} is not the pinned base {base} (nor an earlier "
                        "stage built on it); every stage must start from {{ base }}",
                    )
                )
            stages.append(name)
            seen_from = True
            continue
        if ins.keyword == "ONBUILD":
            sub = ins.args.split(maxsplit=1)
            if sub and sub[0].upper() in ("FROM", "ONBUILD", "MAINTAINER"):
                problems.append((ins.line, f"ONBUILD {sub[0].upper()} is not allowed"))
            continue
        if structure and not seen_from:
            problems.append(
                (
                    ins.line,
                    f"{ins.keyword} before the first FROM; only comments may come before "
                    "FROM {{ base }} (no ARG, no instruction)",
                )
            )
        index = len(stages)
        for flag in ins.flags:
            name, has_value, value = flag.partition("=")
            name = name.lower()
            if name == "--from" and ins.keyword in ("COPY", "ADD"):
                problem = _source_problem(value if has_value else "", stages, index)
                if problem:
                    problems.append((ins.line, f"{ins.keyword} {problem}"))
            elif name == "--mount" and ins.keyword == "RUN":
                for source in _mount_sources(value):
                    problem = _source_problem(source, stages, index)
                    if problem:
                        problems.append((ins.line, f"RUN --mount {problem}"))
    if structure and not seen_from:
        problems.append((1, "has no FROM line; the first instruction must be FROM {{ base }}"))
    return problems


def _dedupe(problems: list[tuple[int, str]]) -> list[tuple[int, str]]:
    seen, out = set(), []
    for item in sorted(problems, key=lambda p: p[0]):
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def check_dockerfile(
    text: str, base: str, syntax_allowlist: frozenset[str] = frozenset()
) -> list[tuple[int, str]]:
    """(line, message) for each way a rendered Dockerfile breaks the rules; [] when it is fine.

    The rules: every stage starts from `base` (the pinned `image@sha256:...`) or from an earlier
    stage (so the final image always derives from the base); nothing but comments before the
    first FROM; no parser directive except `# syntax=<value>` with `<value>` in
    `syntax_allowlist`; `COPY --from` / `RUN --mount=from=` only from earlier stages; every
    instruction known; every heredoc terminated; no control characters.
    """
    problems = _text_problems(text)
    if problems:
        return problems
    aware = parse(text, heredocs=True)
    problems += aware.problems
    for directive in aware.directives:
        if directive.name == "syntax" and directive.value in syntax_allowlist:
            continue
        if directive.name == "syntax":
            allowed = ", ".join(sorted(syntax_allowlist)) or "none (the engine's builtin frontend)"
            problems.append(
                (
                    directive.line,
                    f"parser directive syntax={_shown(directive.value)} is not allowlisted "
                    f"(FACTORY_DOCKERFILE_SYNTAX_ALLOWLIST; allowed: {allowed}); a syntax "
                    "directive makes BuildKit pull and run that image as its frontend",
                )
            )
        else:
            problems.append(
                (
                    directive.line,
                    f"parser directive {directive.name}= is not allowed "
                    "(only an allowlisted # syntax= may be used)",
                )
            )
    for ins in aware.instructions:
        if ins.keyword not in INSTRUCTIONS:
            problems.append((ins.line, f"unknown instruction {_shown(ins.keyword, 40)}"))
    problems += _base_problems(aware, base, structure=True)
    # Engines without heredocs read each heredoc line as an instruction.
    if any(ins.heredoc_names for ins in aware.instructions):
        plain = parse(text, heredocs=False)
        problems += [
            (line, f"{message} (read without heredoc support, as older engines do)")
            for line, message in _base_problems(plain, base, structure=False)
            if (line, message) not in problems
        ]
    return _dedupe(problems)


def check_fragment(text: str) -> list[tuple[int, str]]:
    """(line, message) for each way a fragment breaks the rules; [] when it is fine.

    A fragment is a snippet placed after FROM: known instructions, no FROM (also not in a
    heredoc line, nor under ONBUILD), no parser directive (`# syntax=`, `# escape=`,
    `# check=`, also as `//`), every heredoc terminated, and no `\\` continuing its last line
    into whatever the template puts after it.
    """
    problems = _text_problems(text)
    if problems:
        return problems
    lines = text.split("\n")
    for directive in directive_comments(lines):
        problems.append(
            (
                directive.line,
                f"parser directive {directive.name}= in a fragment (placed first it would steer "
                "BuildKit); fragments may not carry parser directives",
            )
        )
    aware = parse(text, heredocs=True)
    problems += [p for p in aware.problems if not p[1].startswith(_ENDS_CONTINUED)]
    for ins in aware.instructions:
        if ins.keyword not in INSTRUCTIONS:
            problems.append((ins.line, f"unknown instruction {_shown(ins.keyword, 40)}"))
    from_lines: set[int] = set()
    for view in (aware, parse(text, heredocs=False)):
        for ins in view.instructions:
            sub = ins.args.split(maxsplit=1) if ins.keyword == "ONBUILD" else []
            if ins.line in from_lines:
                continue
            if ins.keyword == "FROM" or (sub and sub[0].upper() == "FROM"):
                from_lines.add(ins.line)
                suffix = "" if view is aware else " (a heredoc line older engines read as FROM)"
                problems.append(
                    (
                        ins.line,
                        "FROM in a fragment; only the template may start a stage, from "
                        "{{ base }}" + suffix,
                    )
                )
    body = text.rstrip("\n").split("\n")
    last = len(body)
    while last > 0 and (not body[last - 1].strip() or _is_comment(body[last - 1])):
        last -= 1
    if last and _CONTINUATION.search(body[last - 1].rstrip("\r")):
        problems.append(
            (last, "the last instruction ends with '\\', which would join it to the next line")
        )
    return _dedupe(problems)
