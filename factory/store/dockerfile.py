"""The rules a rendered Dockerfile and a fragment must follow, on top of the parser.

The checks are written to refuse whatever some BuildKit could read as an escape from the pinned
base, so where versions differ they take the stricter reading:

- parser directives are looked for in the whole leading block of comments, blank lines included,
  with `#` or `//` (BuildKit's `DetectSyntax` reads `// syntax=` too);
- every check on `FROM`, `COPY --from` and `RUN --mount=...,from=` runs twice: once with heredoc
  bodies as data (BuildKit >= 0.10, Dockerfile 1.4) and once with every line as an instruction
  (older engines, such as Docker 20.10's builtin frontend, have no heredocs);
- control characters (other than tab, and carriage return before a line end) are refused, so
  Python and Go cannot disagree on where a line or a word ends.

The parser is `factory.store.dockerfile_parse`. No Dagster or Jinja import: this is pure text.
"""

import csv
import re

from factory.store.dockerfile_parse import (
    CONTINUATION,
    ENDS_CONTINUED,
    INSTRUCTIONS,
    Parsed,
    directive_comments,
    is_comment,
    parse,
    shown,
)

# BuildKit reads one physical line into a 64 KiB buffer and fails past it.
MAX_LINE_BYTES = 64 * 1024 - 1

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_STAGE_NAME = re.compile(r"\A[a-z][a-z0-9._-]*\Z")


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
        f"copies or mounts from {shown(source)}, which is not an earlier stage of this "
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
                    problems.append((ins.line, f"stage name {shown(words[2])} is not valid"))
                elif name in stages:
                    problems.append((ins.line, f"stage name {shown(words[2])} is used twice"))
            elif len(words) != 1:
                problems.append(
                    (ins.line, f"FROM {shown(ins.args)}: expected FROM <image> [AS <name>]")
                )
            if image != base and image.lower() not in stages:
                problems.append(
                    (
                        ins.line,
                        f"FROM {shown(image)} is not the pinned base {base} (nor an earlier "
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
                    f"parser directive syntax={shown(directive.value)} is not allowlisted "
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
            problems.append((ins.line, f"unknown instruction {shown(ins.keyword, 40)}"))
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
    problems += [p for p in aware.problems if not p[1].startswith(ENDS_CONTINUED)]
    for ins in aware.instructions:
        if ins.keyword not in INSTRUCTIONS:
            problems.append((ins.line, f"unknown instruction {shown(ins.keyword, 40)}"))
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
    while last > 0 and (not body[last - 1].strip() or is_comment(body[last - 1])):
        last -= 1
    if last and CONTINUATION.search(body[last - 1].rstrip("\r")):
        problems.append(
            (last, "the last instruction ends with '\\', which would join it to the next line")
        )
    return _dedupe(problems)
