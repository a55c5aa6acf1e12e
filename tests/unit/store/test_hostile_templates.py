"""Hostile templates and fragments: refused by `factory validate`, `plan` and `render` before any
build, with a message naming the file and the line, never a traceback, never a hang.

Each case writes the test store (`store_factory`) with one file replaced and runs the real CLI
in-process (CliRunner) with a temporary data dir. A refused store changes nothing: its folder is
byte-for-byte the same after the command, and no data dir is created. The registry is never
asked: validation renders every combination with a placeholder base digest, and `plan` and
`render` stop at validation.
"""

from pathlib import Path

import pytest
from click.testing import CliRunner

from factory.cli.main import main
from tests.unit.store_factory import write_store

TEMPLATE = "templates/service.Dockerfile.j2"
FRAGMENT = "modules/core/0.1.0.Dockerfile"
COMMANDS = {
    "validate": ["validate"],
    "plan": ["plan", "--json"],
    "render": ["render", "--manifest-id", "llm_factory", "--platform", "linux/amd64"],
}
HEAD = "FROM {{ base }}\n"

# (id, template text, words the message must contain besides the template's path and "line")
TEMPLATES = [
    ("syntax evil", "# syntax=evil/frontend\n" + HEAD, ["line 1", "not allowlisted"]),
    ("syntax spaced", "#  syntax = docker/dockerfile:1\n" + HEAD, ["line 1", "syntax"]),
    ("syntax upper", "# SYNTAX=evil\n" + HEAD, ["line 1", "syntax"]),
    ("syntax indented", "   # syntax=evil\n" + HEAD, ["line 1", "syntax"]),
    ("syntax after comment", "# hello\n# syntax=evil\n" + HEAD, ["line 2", "syntax"]),
    ("syntax after blank", "#\n\n# syntax=evil\n" + HEAD, ["line 3", "syntax"]),
    ("syntax after shebang", "#!/usr/bin/env docker\n# syntax=evil\n" + HEAD, ["line 2"]),
    ("syntax with BOM", "\ufeff# syntax=evil\n" + HEAD, ["line 1", "syntax"]),
    ("syntax c-style", "// syntax=evil\n" + HEAD, ["line 1", "syntax"]),
    ("syntax rendered", "# {{ 'syn' ~ 'tax' }}=evil\n" + HEAD, ["line 1", "syntax"]),
    ("escape directive", "# escape=`\n" + HEAD, ["line 1", "escape="]),
    ("check directive", "# check=skip=all\n" + HEAD, ["line 1", "check="]),
    ("json syntax", '{"syntax": "evil/frontend"}\n', ["line 1", "unknown instruction"]),
    ("other base", "FROM alpine\n", ["line 1", "not the pinned base"]),
    ("second base", HEAD + "FROM alpine\n", ["line 2", "not the pinned base"]),
    ("tag not digest", "FROM {{ labels['org.opencontainers.image.base.name'] }}\n", ["line 1"]),
    ("base suffixed", "FROM {{ base }}x\n", ["line 1", "not the pinned base"]),
    ("base cut", "FROM {{ base.split('@')[0] }}:latest\n", ["line 1", "not the pinned base"]),
    ("from variable", "FROM $BASE\n", ["line 1", "not the pinned base"]),
    ("arg before from", "ARG X=1\n" + HEAD, ["line 1", "ARG before the first FROM"]),
    ("arg sets base", "ARG B={{ base }}\nFROM $B\n", ["line 1", "ARG before"]),
    ("run before from", "RUN true\n" + HEAD, ["line 1", "RUN before the first FROM"]),
    ("no from", "RUN true\n", ["has no FROM"]),
    ("empty", "", ["has no FROM"]),
    ("comments only", "# nothing\n", ["has no FROM"]),
    ("platform flag", "FROM --platform=linux/arm64 {{ base }}\n", ["line 1", "no flags"]),
    ("stage twice", HEAD[:-1] + " AS x\n" + HEAD[:-1] + " AS x\n", ["line 2", "twice"]),
    ("stage name bad", HEAD[:-1] + " AS 1x\n", ["line 1", "not valid"]),
    ("from stage later", "FROM later\n" + HEAD[:-1] + " AS later\n", ["line 1"]),
    # A second line that takes files from another image: the pinned base must be the only one.
    *(
        (name, HEAD + line, ["line 2", "copies or mounts"])
        for name, line in [
            ("copy from image", "COPY --from=alpine /x /x\n"),
            ("copy from index", "COPY --from=1 /x /x\n"),
            ("copy from bare", "COPY --from /x /x\n"),
            ("copy FROM upper", "COPY --FROM=alpine /x /x\n"),
            ("add from image", "ADD --from=alpine /x /x\n"),
            ("mount from image", "RUN --mount=type=bind,from=alpine,target=/m true\n"),
            ("mount quoted", 'RUN --mount="type=bind, from=alpine" true\n'),
        ]
    ),
    ("heredoc FROM", HEAD + "RUN <<EOF\nFROM alpine\nEOF\n", ["line 3", "older engines"]),
    ("heredoc open", HEAD + "RUN <<EOF\necho hi\n", ["line 2", "not terminated"]),
    ("continued to end", HEAD + "RUN echo \\\n", ["line 2", "continued line"]),
    ("unknown instruction", HEAD + "ECHO hi\n", ["line 2", "unknown instruction"]),
    ("onbuild from", HEAD + "ONBUILD FROM alpine\n", ["line 2", "ONBUILD FROM"]),
    ("vertical tab", "FROM {{ base }}\x0bRUN x\n", ["line 1", "control character"]),
    # Jinja reads a bare CR as a line end: the second line is checked as such.
    ("bare CR", "FROM {{ base }}\rFROM alpine\n", ["rendered line 2", "not the pinned base"]),
    ("NUL", HEAD + "RUN echo \x00\n", ["line 2", "control character"]),
    ("escape seq", HEAD + "RUN echo \x1b[2J\n", ["line 2", "control character"]),
    ("printed FROM", HEAD + '{{ "FROM alpine" }}\n', ["line 2", "not the pinned base"]),
    ("label newline", HEAD + 'LABEL x={{ "a\\nFROM alpine" }}\n', ["line 3", "pinned base"]),
    (
        "for one manifest",
        "{% if manifest_id == 'web' %}FROM alpine{% else %}FROM {{ base }}{% endif %}\n",
        ["rendering web for linux/amd64", "not the pinned base"],
    ),
    (
        "for one platform",
        "{% if platform == 'linux/arm64' %}FROM alpine\n{% else %}" + HEAD + "{% endif %}",
        ["linux/arm64", "not the pinned base"],
    ),
    ("long line", HEAD + "RUN echo " + "x" * 70_000 + "\n", ["line 2", "longer than"]),
    # Jinja: syntax, no loader, runtime failures.
    ("unclosed print", HEAD + "{{ base\n", ["line 2", "syntax error"]),
    ("empty for", HEAD + "{% for %}\n", ["line 2", "syntax error"]),
    ("unknown tag", HEAD + "{% frobnicate %}\n", ["line 2", "syntax error"]),
    ("endfor alone", HEAD + "{% endfor %}\n", ["line 2", "syntax error"]),
    ("tag soup", "{%" * 3000, ["syntax error"]),
    ("include", HEAD + "{% include '/etc/passwd' %}\n", ["line 2", "include"]),
    ("import", HEAD + "{% import 'x.j2' as x %}\n", ["line 2", "import"]),
    ("from import", HEAD + "{% from 'x.j2' import y %}\n", ["line 2", "import"]),
    ("extends", "{% extends 'base.j2' %}\n", ["line 1", "extends"]),
    ("undefined", HEAD + "RUN echo {{ nosuch }}\n", ["line 2", "undefined"]),
    ("undefined fragment", HEAD + "{{ fragments.nosuch }}\n", ["line 2", "nosuch"]),
    ("division by zero", HEAD + "RUN echo {{ 1 / 0 }}\n", ["line 2", "division by zero"]),
    ("floor division by zero", HEAD + "RUN echo {{ 1 // 0 }}\n", ["division by zero"]),
    ("modulo by zero", HEAD + "RUN echo {{ 1 % 0 }}\n", ["division by zero"]),
    ("float overflow", HEAD + "RUN echo {{ 2.0 ** 10000 }}\n", ["line 2", "OverflowError"]),
    ("huge power", HEAD + "RUN echo {{ 10 ** 100000 }}\n", ["line 2", "bits"]),
    ("power tower", HEAD + "RUN echo {{ (2 ** 1000) ** 1000 }}\n", ["bits"]),
    ("huge product", "{% set n = 2 ** 60000 %}" + HEAD + "{{ n * n }}\n", ["bits"]),
    ("string repeat", HEAD + "RUN echo {{ 'x' * 10 ** 10 }}\n", ["line 2", "repetition"]),
    ("list repeat", HEAD + "RUN echo {{ [0] * 10 ** 9 }}\n", ["repetition"]),
    ("fragment repeat", HEAD + "{{ fragments.core * 10 ** 8 }}\n", ["repetition"]),
    ("huge range", HEAD + "{% for i in range(10 ** 9) %}{% endfor %}\n", ["range"]),
    (
        "nested loops",
        HEAD + "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\n",
        ["line 2", "loop iterations"],
    ),
    (
        "nested loops printing",
        HEAD + "{% for i in range(100000) %}{% for j in range(100000) %}x"
        "{% endfor %}{% endfor %}\n",
        ["loop iterations"],
    ),
    (
        "doubling concat",
        "{% set ns = namespace(s='x') %}{% for i in range(80) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}" + HEAD,
        ["line 1", "at most"],
    ),
    (
        "doubling plus",
        "{% set ns = namespace(s='xx') %}{% for i in range(80) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}" + HEAD,
        ["concatenation"],
    ),
    ("center", HEAD + "{{ 'x' | center(10 ** 10) }}\n", ["center"]),
    ("ljust", HEAD + "{{ 'x'.ljust(10 ** 10) }}\n", ["ljust"]),
    ("zfill", HEAD + "{{ 'x'.zfill(10 ** 10) }}\n", ["zfill"]),
    ("indent", HEAD + "{{ 'a\\nb' | indent(10 ** 9) }}\n", ["indent"]),
    ("replace", HEAD + "{{ ('x' * 1000000) | replace('x', 'y' * 10) }}\n", ["replace"]),
    ("join", HEAD + "{{ (range(100000) | list) | join('x' * 100) }}\n", ["join"]),
    ("str join", HEAD + "{{ ','.join(['x' * 1000000] * 100) }}\n", ["join"]),
    ("format", HEAD + "{{ '{:>999999999}'.format(1) }}\n", ["str.format is not allowed"]),
    ("format item", HEAD + "{{ 'x'['format'] }}\n", ["str.format is not allowed"]),
    ("percent width", HEAD + "{{ '%999999999d' % 1 }}\n", ["formatting"]),
    ("percent star", HEAD + "{{ '%*d' % (5, 1) }}\n", ["formatting"]),
    ("batch", HEAD + "{{ [1] | batch(10 ** 9, 'x') | list }}\n", ["batch"]),
    ("slice", HEAD + "{{ [1] | slice(10 ** 9) | list }}\n", ["slice"]),
    ("format filter", HEAD + "{{ '%s' | format(1) }}\n", ["No filter named 'format'"]),
    ("random filter", HEAD + "{{ [1, 2] | random }}\n", ["No filter named 'random'"]),
    ("lipsum", HEAD + "{{ lipsum(10 ** 6) }}\n", ["lipsum"]),
    ("macro recursion", "{% macro f() %}{{ f() }}{% endmacro %}" + HEAD + "{{ f() }}\n", ["recur"]),
    (
        "macro fan-out",
        "{% macro f() %}{{ f() }}{{ f() }}{% endmacro %}" + HEAD + "{{ f() }}\n",
        ["recursion"],
    ),
    (
        "recursive loop",
        HEAD + "{% for x in fragments recursive %}{{ loop(fragments) }}{% endfor %}\n",
        ["recursion"],
    ),
    (
        "nested ifs",
        HEAD + "{% if 1 %}" * 120 + "x" + "{% endif %}" * 120,
        ["nested more than 10 deep"],
    ),
    (
        "nested fors",
        HEAD + "{% for a in range(2) %}" * 25 + "{% endfor %}" * 25,
        ["nested more than 10 deep"],
    ),
    ("class access", HEAD + "{{ ''.__class__.__mro__ }}\n", ["line 2", "unsafe"]),
    ("globals access", HEAD + "{{ self.__init__.__globals__ }}\n", ["line 2", "unsafe"]),
    ("list append", HEAD + "{{ [1].append(2) }}\n", ["line 2", "unsafe"]),
    ("dict update", HEAD + "{{ labels.update({}) }}\n", ["line 2", "unsafe"]),
    (
        "huge output",
        HEAD + "{% for i in range(100000) %}{{ fragments.core * 200 }}{% endfor %}\n",
        ["over"],
    ),
]

# (id, fragment text, words the message must contain besides the fragment's path and "line")
FRAGMENTS = [
    ("FROM", "FROM alpine\n", ["line 1", "FROM in a fragment"]),
    ("from lower", "RUN true\nfrom alpine AS x\n", ["line 2", "FROM in a fragment"]),
    ("FROM indented", "RUN true\n  \tFROM alpine\n", ["line 2", "FROM"]),
    ("FROM base", "FROM 127.0.0.1:5000/factory/base/busybox:1.35\n", ["FROM"]),
    ("ONBUILD FROM", "ONBUILD FROM alpine\n", ["line 1", "FROM"]),
    ("heredoc FROM", "RUN <<EOF\nFROM alpine\nEOF\n", ["line 2", "older engines"]),
    ("heredoc dash", "RUN <<-EOF\n\tFROM alpine\n\tEOF\n", ["line 2"]),
    ("heredoc open", "RUN <<EOF\necho hi\n", ["line 1", "not terminated"]),
    ("syntax", "# syntax=evil/frontend\nRUN true\n", ["line 1", "parser directive"]),
    ("syntax later", "RUN true\n# syntax=evil\n", ["line 2", "parser directive"]),
    ("escape", "# escape=`\nRUN true\n", ["line 1", "parser directive"]),
    ("check", "#check=skip=all\nRUN true\n", ["line 1", "parser directive"]),
    ("c-style syntax", "// syntax=evil\n", ["line 1", "parser directive"]),
    ("trailing backslash", "RUN echo \\\n", ["line 1", "join it to the next"]),
    ("backslash then comment", "RUN echo \\\n# c\n", ["line 1", "join"]),
    ("unknown", "ECHO hi\n", ["line 1", "unknown instruction"]),
    ("nbsp FROM", "FROM\u00a0alpine\n", ["line 1", "unknown instruction"]),
    ("NUL", "RUN true\x00\n", ["line 1", "control character"]),
    ("bare CR", "RUN true\rFROM alpine\n", ["line 1", "control character"]),
    ("escape sequence", "RUN echo \x1b]0;x\x07\n", ["control character"]),
    ("long line", "RUN echo " + "x" * 70_000 + "\n", ["longer than"]),
    ("ARG then FROM", "ARG X\nFROM alpine\n", ["line 2", "FROM"]),
]
# Fragment text that is refused once rendered: the message names the template and its line.
FRAGMENTS_REFUSED_IN_THE_TEMPLATE = [
    ("copy from image", "COPY --from=alpine /x /x\n", ["copies or mounts"]),
    ("mount from image", "RUN --mount=from=alpine,target=/m true\n", ["copies"]),
]

# Accepted on purpose (documented harmless): validate passes.
ACCEPTED = [
    ("fragment CRLF", {FRAGMENT: "RUN true\r\nRUN echo ok\r\n"}),
    ("fragment empty", {FRAGMENT: ""}),
    ("fragment comments", {FRAGMENT: "# just a note\n"}),
    ("fragment heredoc", {FRAGMENT: "RUN <<EOF\necho hi\nEOF\n"}),
    ("fragment ARG", {FRAGMENT: "ARG VERSION=1\nRUN echo $VERSION\n"}),
    (
        "multi-stage on the base",
        {
            TEMPLATE: "FROM {{ base }} AS build\nRUN echo hi > /x\n"
            "FROM {{ base }}\nCOPY --from=build /x /x\nRUN --mount=from=build,target=/m true\n"
        },
    ),
    ("stage from stage", {TEMPLATE: "FROM {{ base }} AS one\nFROM one AS two\nFROM two\n"}),
    ("comment mentions syntax", {TEMPLATE: "FROM {{ base }}\n# syntax=evil (only a comment)\n"}),
]


def invoke(args: list[str], store: Path, tmp_path: Path, env: dict | None = None):
    data = tmp_path / "data"
    full_env = {
        "FACTORY_DATA_DIR": str(data),
        "DAGSTER_HOME": str(data / "dagster"),
        "FACTORY_MANIFEST_STORE": str(store),
        "FACTORY_DOCKERFILE_SYNTAX_ALLOWLIST": "",
        "FACTORY_RENDER_TIMEOUT_S": "",
        **(env or {}),
    }
    return CliRunner().invoke(main, args, env=full_env, catch_exceptions=True)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_refused(result, tmp_path: Path, before: dict, store: Path, words: list[str]) -> None:
    output = result.output
    assert result.exit_code == 1, output[-2000:]
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in output
    assert str(store) in output
    for word in words:
        assert word in output, f"{word!r} not in: {output[-3000:]}"
    assert "\x1b" not in output and "\x00" not in output
    assert len(output) < 200_000
    assert snapshot(store.parent) == before, "a refused store was changed"
    assert not (tmp_path / "data").exists(), "a refused command wrote to the data dir"


# Where each hostile text is planted, and what the message names besides the text's own words:
# a template by its quoted name and line, a fragment by its path and line.
HOSTILE = [
    *(
        (f"template-{name}", TEMPLATE, text, [f'"{TEMPLATE}"', "line", *words])
        for name, text, words in TEMPLATES
    ),
    *(
        (f"fragment-{name}", FRAGMENT, text, [FRAGMENT, "line", *words])
        for name, text, words in FRAGMENTS
    ),
    *(
        (f"fragment-{name}", FRAGMENT, text, [TEMPLATE, "line", *words])
        for name, text, words in FRAGMENTS_REFUSED_IN_THE_TEMPLATE
    ),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("rel", "text", "words"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE]
)
def test_hostile_text_is_refused(tmp_path, command, rel, text, words):
    store = write_store(tmp_path)
    (store.parent / rel).write_text(text, encoding="utf-8", newline="")
    before = snapshot(store.parent)
    result = invoke(COMMANDS[command], store, tmp_path)
    assert_refused(result, tmp_path, before, store, words)


@pytest.mark.parametrize("files", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_harmless_text_is_accepted(tmp_path, files):
    store = write_store(tmp_path)
    for rel, text in files.items():
        (store.parent / rel).write_text(text, encoding="utf-8", newline="")
    result = invoke(["validate"], store, tmp_path)
    assert result.exit_code == 0, result.output
    assert "valid: 2 manifests" in result.output


@pytest.mark.timeout(60)
def test_render_timeout_names_the_template(tmp_path):
    slow = HEAD + "{% for i in range(100000) %}{{ ('x' * 1000000).upper() | length }}{% endfor %}\n"
    store = write_store(tmp_path)
    (store.parent / TEMPLATE).write_text(slow)
    before = snapshot(store.parent)
    result = invoke(["validate"], store, tmp_path, {"FACTORY_RENDER_TIMEOUT_S": "0.3"})
    assert_refused(result, tmp_path, before, store, [f'"{TEMPLATE}"', "line 2", "0.3 s"])
    # One template that hits a limit is rendered once, not once per combination.
    assert "more not rendered after this" in result.output


def test_syntax_allowlist_lets_a_listed_frontend_through(tmp_path):
    store = write_store(tmp_path)
    (store.parent / TEMPLATE).write_text("# syntax=docker/dockerfile:1.7\n" + HEAD)
    listed = {"FACTORY_DOCKERFILE_SYNTAX_ALLOWLIST": "docker/dockerfile:1.7, other/x:1"}
    assert invoke(["validate"], store, tmp_path, listed).exit_code == 0
    result = invoke(["validate"], store, tmp_path, {"FACTORY_DOCKERFILE_SYNTAX_ALLOWLIST": "x"})
    assert result.exit_code == 1 and "not allowlisted" in result.output
    assert "allowed: x" in result.output


@pytest.mark.parametrize("value", ["nan", "-1", "0", "1e9", "soon"])
def test_bad_render_timeout_setting_is_a_message(tmp_path, value):
    store = write_store(tmp_path)
    result = invoke(["validate"], store, tmp_path, {"FACTORY_RENDER_TIMEOUT_S": value})
    assert result.exit_code == 1, result.output
    assert "FACTORY_RENDER_TIMEOUT_S" in result.output and "Traceback" not in result.output


def test_one_broken_template_is_reported_once_for_all_its_combinations(tmp_path):
    store = write_store(tmp_path)
    (store.parent / TEMPLATE).write_text("FROM alpine\n")
    result = invoke(["validate"], store, tmp_path)
    assert result.exit_code == 1
    assert "1 problem" in result.output
    assert "and 3 other combinations" in result.output


def test_validation_needs_no_registry(tmp_path):
    # An address where nothing listens: validation renders with a placeholder digest.
    store = write_store(
        tmp_path,
        lambda d: d["bases"]["busybox"].update(image="127.0.0.1:9/factory/base/busybox"),
    )
    result = invoke(["validate"], store, tmp_path)
    assert result.exit_code == 0, result.output
