"""Property: whatever a manifest store becomes, validation and planning end in a plan or a clear
StoreError, never a traceback.

Hypothesis mutates a valid store (`store_factory.valid_store_dict`): it deletes, replaces, renames
and retypes keys at random depths, inserts weird strings (unicode, control characters, lone
surrogates, '../', very long ones, template syntax), duplicates entries (platforms, manifests),
and, on the serialized bytes, truncates, injects invalid UTF-8 and duplicates keys. Each result
goes through `load_store` and `plan` (fixed fake base digests, no records). The outcome must be
either a LoadedStore whose plan has exactly one item per manifest x platform with 64-hex keys, or a
StoreError whose every problem names the store's file, and the store's folder must be unchanged
(validation writes nothing). Any other exception fails the test with the mutation that caused it.
"""

import copy
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, find, given, settings
from hypothesis import strategies as st

from factory.errors import Problem, StoreError
from factory.plan.decisions import REASONS, RecordIndex, plan
from factory.platforms import PLATFORMS
from factory.store.load import load_store
from tests.unit.store_factory import valid_store_dict, write_store

HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
FAKE_DIGEST = "sha256:" + "0" * 64

# Values a real store uses: drawn often, so many mutations keep the store valid but different,
# which exercises planning and not only the error paths.
PLAUSIBLE = [
    "linux/amd64",
    "linux/arm64",
    "linux/amd64+gpu",
    "0.1.0",
    "0.2.0",
    "1.35",
    "smoke",
    "http",
    "core",
    "light",
    "security",
    "service",
    "busybox",
    "amd64only",
    "normal",
    "high",
    "templates/service.Dockerfile.j2",
    "modules/core/0.2.0.Dockerfile",
    "tests/http.sh",
    "./tests/smoke.sh",
    "tests/../tests/smoke.sh",
    "new_id",
    "x-1",
    "127.0.0.1:5000/factory/x",
]
WEIRD = [
    "",
    " ",
    "\x00",
    "\n",
    "\t",
    "\x7f",
    "\x1b[31m",
    "\u202e",
    "\ud800",
    "\udfff",
    "é",
    "💥",
    "\uff21\uff22\uff23",
    "٣",
    "..",
    ".",
    "../",
    "../store/manifest.json",
    "../../etc/passwd",
    "/etc/passwd",
    "a/../../b",
    "modules/../../outside",
    "C:\\x",
    "a\\b",
    "Upper",
    "-x",
    "_x",
    "x" * 63,
    "x" * 64,
    "a" * 5000,
    "é" * 3000,
    "${HOME}",
    "{{ base }}",
    "{% include '/etc/passwd' %}",
    "'; rm -rf / #",
    "linux/amd64\n",
    "0.1.0\n",
    "0.1",
    "01.0.0",
    "1.0.0-",
    "sha256:" + "0" * 64,
    "127.0.0.1:5000/Factory/X",
    "localhost/a:b",
    "%2e%2e/x",
    "null",
    "true",
    "1e999",
    "NaN",
    "tests",
    "modules",
    "templates/",
    "templates/service.Dockerfile.j2/",
]

strings = st.one_of(
    st.sampled_from(PLAUSIBLE),
    st.sampled_from(WEIRD),
    st.text(max_size=30),
    st.text(st.characters(max_codepoint=0x7F), max_size=12),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**80), max_value=10**80),
    st.sampled_from([0, 1, -1, 60, 2**31, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    strings,
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(strings, children, max_size=4)
    ),
    max_leaves=10,
)

# Places a random walk rarely reaches but where mistakes are likely and interesting.
CURATED_PATHS = [
    ("schema_version",),
    ("bases", "busybox", "platforms"),
    ("bases", "busybox", "image"),
    ("bases", "busybox", "tag"),
    ("templates", "service"),
    ("templates", "service", "path"),
    ("templates", "service", "version"),
    ("modules", "core"),
    ("modules", "core", "0.2.0", "path"),
    ("test_suites", "smoke", "timeout_s"),
    ("test_suites", "http", "path"),
    ("manifests",),
    ("manifests", "llm_factory"),
    ("manifests", "llm_factory", "platforms"),
    ("manifests", "llm_factory", "fragments"),
    ("manifests", "web", "tests"),
    ("manifests", "web", "base"),
    ("manifests", "web", "priority"),
]
OPS = ("delete", "replace", "rename", "insert", "duplicate", "retype")


@dataclass(frozen=True)
class Mutation:
    """One edit: `path` is walked from the root (ints pick the n-th key/item, strs name a key)."""

    op: str
    path: tuple
    value: Any
    key: str


wild_mutations = st.builds(
    Mutation,
    op=st.sampled_from(OPS),
    path=st.one_of(
        st.lists(st.integers(min_value=0, max_value=40), max_size=6).map(tuple),
        st.sampled_from(CURATED_PATHS),
    ),
    value=values,
    key=strings,
)

# Edits a user makes on purpose (drop a platform, add a manifest like another, bump a fragment):
# many leave the store valid, so planning of changed stores is exercised too.
GENTLE_PATHS = [
    ("manifests", "llm_factory"),
    ("manifests", "web"),
    ("manifests", "llm_factory", "platforms", 0),
    ("manifests", "llm_factory", "platforms", 2),
    ("manifests", "llm_factory", "fragments", "light"),
    ("manifests", "llm_factory", "fragments", "core"),
    ("manifests", "web", "tests", 1),
    ("manifests", "web", "priority"),
    ("bases", "busybox"),
    ("bases", "amd64only", "platforms", 0),
    ("modules", "core", "0.2.0"),
    ("test_suites", "http"),
    ("test_suites", "smoke", "timeout_s"),
]
VALID_IDS = ["new_id", "x-1", "a", "m2", "z" * 63]
GENTLE_VALUES = [
    "linux/amd64",
    "linux/arm64",
    "linux/amd64+gpu",
    "0.1.0",
    "0.2.0",
    "high",
    "normal",
    "smoke",
    "http",
    ["linux/amd64"],
    ["linux/arm64", "linux/amd64"],
    ["smoke"],
    [],
    {"security": "0.1.0"},
    1,
    30,
    3600,
]
gentle_mutations = st.builds(
    Mutation,
    op=st.sampled_from(("delete", "replace", "rename", "duplicate")),
    path=st.sampled_from(GENTLE_PATHS),
    value=st.sampled_from(GENTLE_VALUES),
    key=st.sampled_from(VALID_IDS),
)
# Two gentle draws to one wild one: about a third of the mutated stores stay valid.
mutations = st.one_of(wild_mutations, gentle_mutations, gentle_mutations)


@dataclass(frozen=True)
class RawMutation:
    """An edit of the serialized bytes: what `json.dumps` can never produce."""

    op: str  # truncate | inject | duplicate_line
    position: int
    data: bytes


raw_mutations = st.builds(
    RawMutation,
    op=st.sampled_from(("truncate", "inject", "duplicate_line")),
    position=st.integers(min_value=0, max_value=10_000),
    data=st.one_of(
        st.sampled_from(
            [
                b"\xff",
                b"\x00",
                b"\xc3",
                b"\xed\xa0\x80",
                b"{",
                b"}",
                b",",
                b'"',
                b"\\",
                b"[",
                b"]",
                b'"schema_version": 1, ',
                b"\xef\xbb\xbf",
                b"1" * 100,
            ]
        ),
        st.binary(max_size=8),
    ),
)


def _locate(root: Any, path: tuple) -> tuple[Any, Any]:
    """(container, key) the path ends at; (None, None) for the root itself."""
    parent, key, node = None, None, root
    for step in path:
        if isinstance(node, dict) and node:
            if isinstance(step, str):
                if step not in node:
                    break
                chosen: Any = step
            else:
                chosen = list(node)[step % len(node)]
        elif isinstance(node, list) and node and isinstance(step, int):
            chosen = step % len(node)
        else:
            break
        parent, key, node = node, chosen, node[chosen]
    return parent, key


def _retyped(value: Any) -> Any:
    """The same content as another JSON type: "1.35" -> ["1.35"], 60 -> "60", [a] -> {"0": a}."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(i): item for i, item in enumerate(value)}
    return list(value.values())


def apply(data: Any, mutation: Mutation) -> Any:
    """Apply one mutation in place where possible; return the (possibly replaced) root."""
    parent, key = _locate(data, mutation.path)
    if parent is None:  # the root itself
        if mutation.op == "replace":
            return copy.deepcopy(mutation.value)
        if mutation.op == "retype":
            return _retyped(data)
        if mutation.op == "insert" and isinstance(data, dict):
            data[mutation.key] = copy.deepcopy(mutation.value)
        return data
    target = parent[key]
    if mutation.op == "delete":
        del parent[key]
    elif mutation.op == "replace":
        parent[key] = copy.deepcopy(mutation.value)
    elif mutation.op == "rename" and isinstance(parent, dict):
        parent[mutation.key] = parent.pop(key)
    elif mutation.op == "insert":
        into = target if isinstance(target, dict | list) else parent
        if isinstance(into, dict):
            into[mutation.key] = copy.deepcopy(mutation.value)
        else:
            into.insert(len(mutation.key) % (len(into) + 1), copy.deepcopy(mutation.value))
    elif mutation.op == "duplicate":
        # A list gets one of its items again (a platform listed twice); a dict gets a copy of
        # the entry under a new key (a second manifest or base just like the first).
        if isinstance(target, list) and target:
            target.append(copy.deepcopy(target[len(mutation.key) % len(target)]))
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(target))
        else:
            parent[mutation.key] = copy.deepcopy(target)
    elif mutation.op == "retype":
        parent[key] = _retyped(target)
    return data


def apply_raw(raw: bytes, mutation: RawMutation) -> bytes:
    at = mutation.position % (len(raw) + 1)
    if mutation.op == "truncate":
        return raw[:at]
    if mutation.op == "inject":
        return raw[:at] + mutation.data + raw[at:]
    lines = raw.split(b"\n")
    i = mutation.position % len(lines)
    return b"\n".join([*lines[: i + 1], lines[i], *lines[i + 1 :]])


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def load_or_error(path: Path):
    """(the loaded store, None), or (None, the StoreError) whose problems, at least one, are all
    in the store file."""
    try:
        return load_store(path), None
    except StoreError as exc:
        error = exc
    assert error.problems, "a StoreError must list at least one problem"
    for problem in error.problems:
        assert problem.file == str(path), problem
    return None, error


def outcome(path: Path, *, gpu_available: bool = False) -> str:
    """Run validation and planning; assert the contract; return "plan" or "error"."""
    before = _snapshot(path.parent)
    store, error = load_or_error(path)
    if error is not None:
        for problem in error.problems:
            assert isinstance(problem, Problem)
            assert problem.message.strip(), problem
            assert "\n" not in problem.location, problem
        assert str(path) in str(error)
        result = "error"
    else:
        digests = {
            (base, platform.oci_platform): FAKE_DIGEST
            for base in store.model.bases
            for platform in PLATFORMS
        }
        items = plan(store, digests, RecordIndex(), gpu_available=gpu_available)
        combos = [(mid, p) for mid, m in store.model.manifests.items() for p in m.platforms]
        assert len(set(combos)) == len(combos), f"the store was accepted with a duplicate: {combos}"
        assert sorted((i.manifest_id, i.platform) for i in items) == sorted(combos)
        for item in items:
            assert HEX64.match(item.build_key), item
            assert HEX64.match(item.record_key), item
            assert item.action in ("run", "skip"), item
            assert set(item.reasons) <= set(REASONS), item
        result = "plan"
    assert _snapshot(path.parent) == before, "validation or planning changed the store's folder"
    return result


def run_mutations(muts: list[Mutation], gpu_available: bool = False) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_store(Path(tmp), lambda data: _apply_all(data, muts))
        return outcome(path, gpu_available=gpu_available)


def _apply_all(data: Any, muts: list[Mutation]) -> Any:
    for mutation in muts:
        data = apply(data, mutation)
    return data


SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(muts=st.lists(mutations, min_size=1, max_size=3), gpu_available=st.booleans())
def test_mutated_store_gives_a_plan_or_a_store_error(muts, gpu_available):
    event(run_mutations(muts, gpu_available))


@settings(max_examples=150, deadline=None)
@given(
    muts=st.lists(mutations, max_size=2),
    raw=st.lists(raw_mutations, min_size=1, max_size=3),
)
def test_mutated_store_bytes_give_a_plan_or_a_store_error(muts, raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_store(Path(tmp), lambda data: _apply_all(data, muts))
        data = path.read_bytes()
        for mutation in raw:
            data = apply_raw(data, mutation)
        path.write_bytes(data)
        os.utime(path, ns=(0, 0))
        event(outcome(path))


def test_mutations_reach_both_outcomes():
    """The generator is not degenerate: some mutated stores still plan, some are refused."""
    quick = settings(max_examples=300, deadline=None, database=None)
    valid = valid_store_dict()

    def changed_but_valid(muts: list[Mutation]) -> bool:
        changed = _apply_all(valid_store_dict(), muts) != valid
        return changed and run_mutations(muts) == "plan"

    find(st.lists(mutations, min_size=1, max_size=2), changed_but_valid, settings=quick)
    find(
        st.lists(mutations, min_size=1, max_size=2),
        lambda muts: run_mutations(muts) == "error",
        settings=quick,
    )


def test_raw_duplicate_key_is_a_store_error(tmp_path):
    """A fixed example of the raw mutations: a duplicated `"tag": ...` line is refused."""
    path = write_store(tmp_path)
    text = path.read_text()
    line = next(x for x in text.splitlines() if '"tag"' in x)
    path.write_text(text.replace(line, line + "\n" + line, 1))
    assert outcome(path) == "error"
    assert json.loads(text)  # the unmutated text was valid JSON


# --- template and fragment text ---------------------------------------------------------------

# Pieces of Dockerfile and Jinja text, benign and hostile, joined into lines at random.
DOCKER_PIECES = [
    "FROM {{ base }}",
    "FROM {{ base }} AS build",
    "FROM build",
    "FROM alpine",
    "from alpine",
    "FROM $BASE",
    "ARG X=1",
    "RUN true",
    "RUN echo hi \\",
    "RUN <<EOF",
    "EOF",
    "COPY --from=build /a /b",
    "COPY --from=alpine /a /b",
    "RUN --mount=type=bind,from=alpine,target=/m true",
    "ENV A=1",
    "LABEL a=b",
    "ONBUILD FROM x",
    "# syntax=evil/frontend",
    "# escape=`",
    "// syntax=evil",
    "# a comment",
    "",
    "   ",
    "WORKDIR /opt",
    "ECHO hi",
    "\t",
]
JINJA_PIECES = [
    "{{ base }}",
    "{{ manifest_id }}",
    "{{ platform }}",
    "{{ labels | length }}",
    "{% for name, snippet in fragments.items() %}{{ snippet }}{% endfor %}",
    "{% for k, v in labels.items() %}LABEL {{ k }}={{ v | dockerquote }}\n{% endfor %}",
    "{% if platform == 'linux/arm64' %}FROM alpine{% endif %}",
    "{% if manifest_id == 'web' %}",
    "{% endif %}",
    "{% for i in range(3) %}",
    "{% endfor %}",
    "{{ 1 / 0 }}",
    "{{ 'x' * 10 ** 9 }}",
    "{{ 2 ** 100000 }}",
    "{{ nosuch }}",
    "{% include 'x' %}",
    "{{ ''.__class__ }}",
    "{{",
    "{%",
    "{#",
    "#}",
    "{{ 'FROM alpine' }}",
    "{{ '\\n' }}",
]
text_lines = st.lists(
    st.one_of(
        st.sampled_from(DOCKER_PIECES),
        st.sampled_from(JINJA_PIECES),
        st.text(max_size=12),
        st.tuples(st.sampled_from(DOCKER_PIECES), st.sampled_from(JINJA_PIECES)).map("".join),
    ),
    max_size=8,
)
TEMPLATE_FILE = "templates/service.Dockerfile.j2"
FRAGMENT_FILE = "modules/core/0.1.0.Dockerfile"
_FROM_LINE = re.compile(r"\A\s*FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*\Z", re.IGNORECASE)


def _logical_lines(text: str) -> list[str]:
    """The rendered text's instructions: continuation lines joined, comments and blanks dropped
    (every heredoc line is kept as a line, as engines without heredocs read it)."""
    out, current = [], None
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        if current is not None and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current is None and (not line.strip() or line.lstrip().startswith("#")):
            continue
        piece = line.rstrip(" \t")
        joined = (current or "") + (piece[:-1] if piece.endswith("\\") else line)
        if piece.endswith("\\"):
            current = joined
        else:
            out.append(joined)
            current = None
    if current is not None:
        out.append(current)
    return out


def _only_pinned_froms(text: str, pinned: str) -> None:
    stages: list[str] = []
    for line in _logical_lines(text):
        words = line.split()
        if not words or words[0].upper() != "FROM":
            continue
        match = _FROM_LINE.match(line)
        assert match, f"an accepted Dockerfile has the FROM line {line!r}"
        image, name = match.group(1), match.group(2)
        assert image == pinned or image.lower() in stages, (
            f"an accepted Dockerfile starts a stage from {image!r}:\n{text}"
        )
        stages.append((name or "").lower())
    assert stages, f"an accepted Dockerfile has no FROM:\n{text}"


def text_outcome(template: str, fragment: str) -> str:
    """Validate a store with this template and fragment text; assert the contract."""
    from factory.platforms import BY_NAME
    from factory.store.keys import build_key, combination_inputs
    from factory.store.render import render_dockerfile

    with tempfile.TemporaryDirectory() as tmp:
        path = write_store(Path(tmp))
        (path.parent / TEMPLATE_FILE).write_text(template, encoding="utf-8", newline="")
        (path.parent / FRAGMENT_FILE).write_text(fragment, encoding="utf-8", newline="")
        before = _snapshot(path.parent)
        store, error = load_or_error(path)
        assert _snapshot(path.parent) == before
        if error is not None:
            for problem in error.problems:
                assert "\n" not in problem.message and "\n" not in problem.location, problem
            assert "Traceback" not in str(error)
            return "error"
        for manifest_id, platform in store.combinations():
            inputs = combination_inputs(store, manifest_id, BY_NAME[platform.name], FAKE_DIGEST)
            rendered = render_dockerfile(store, inputs, build_key(inputs)).text
            _only_pinned_froms(rendered, inputs.base["pinned"])
        return "plan"


TEXT_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@TEXT_SETTINGS
@given(template=text_lines, fragment=text_lines)
def test_template_and_fragment_text_give_a_pinned_dockerfile_or_a_store_error(template, fragment):
    event(text_outcome("\n".join(template) + "\n", "\n".join(fragment) + "\n"))


@TEXT_SETTINGS
@given(
    extra=text_lines,
    fragment=st.lists(st.sampled_from(DOCKER_PIECES[6:]), max_size=6),
    position=st.integers(min_value=0, max_value=8),
)
def test_edits_around_a_valid_template(extra, fragment, position):
    """Lines inserted into the real template (many stay valid, so acceptance is exercised)."""
    from tests.unit.store_factory import TEMPLATE

    lines = TEMPLATE.split("\n")
    at = position % (len(lines) + 1)
    template = "\n".join([*lines[:at], *extra, *lines[at:]])
    event(text_outcome(template, "\n".join(fragment) + "\n"))


def test_text_generators_reach_both_outcomes():
    quick = settings(max_examples=300, deadline=None, database=None)
    find(
        st.tuples(text_lines, st.lists(st.sampled_from(DOCKER_PIECES[6:]), max_size=4)),
        lambda t: (
            text_outcome("FROM {{ base }}\n" + "\n".join(t[0]) + "\n", "\n".join(t[1]) + "\n")
            == "plan"
        ),
        settings=quick,
    )
    find(
        st.tuples(text_lines, text_lines),
        lambda t: text_outcome("\n".join(t[0]) + "\n", "\n".join(t[1]) + "\n") == "error",
        settings=quick,
    )
