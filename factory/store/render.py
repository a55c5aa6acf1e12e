"""The Dockerfile of one combination: its template rendered with the combination's values.

The template gets `base` (the pinned `image@sha256:...` for this platform), `fragments` (name ->
snippet, in the manifest's order), `manifest_id`, `platform` and `labels` (the OCI labels Factory
sets on every image). Every value Factory interpolates (all but the fragments) must be one
printable line. The render runs in the sandbox and within the limits of `factory.store.sandbox`;
the rendered text is then checked by `factory.store.dockerfile.check_dockerfile` (every stage
starts from the pinned base, no parser directive except an allowlisted `# syntax=`), and a
problem is named by the template's line where one reads like the rendered line. Failures are
StageErrors of stage `render` naming the template's file.
"""

import re
from dataclasses import dataclass
from typing import Any

from factory.errors import StageError
from factory.settings import dockerfile_syntax_allowlist
from factory.store.dockerfile import check_dockerfile
from factory.store.keys import CombinationInputs
from factory.store.load import LoadedStore
from factory.store.sandbox import RenderError, render_template

LABEL_PREFIX = "io.factory"


@dataclass(frozen=True)
class RenderedDockerfile:
    """A combination's rendered Dockerfile and the labels its image gets."""

    text: str
    labels: dict[str, str]


def oci_labels(inputs: CombinationInputs, build_key: str) -> dict[str, str]:
    """The labels Factory sets on every image: where it came from and from what."""
    fragments = ",".join(f"{f['name']}@{f['version']}" for f in inputs.fragments)
    return {
        "org.opencontainers.image.title": inputs.manifest_id,
        "org.opencontainers.image.base.name": inputs.base["ref"],
        "org.opencontainers.image.base.digest": inputs.base["digest"],
        f"{LABEL_PREFIX}.manifest-id": inputs.manifest_id,
        f"{LABEL_PREFIX}.platform": inputs.platform,
        f"{LABEL_PREFIX}.build-key": build_key,
        f"{LABEL_PREFIX}.template": f"{inputs.template['name']}@{inputs.template['version']}",
        f"{LABEL_PREFIX}.fragments": fragments,
    }


_PINNED = re.compile(r"\A[A-Za-z0-9._:/-]+@sha256:[0-9a-f]{64}\Z")
_ONE_LINE = re.compile(r"\A[^\x00-\x1f\x7f-\x9f\u2028\u2029]*\Z")


def context_problems(context: dict[str, Any]) -> list[str]:
    """Every value Factory interpolates (all but the fragments) must be one printable line."""
    problems = []
    if not _PINNED.match(context["base"]):
        problems.append(f"base {context['base'][:100]!r} is not a pinned image@sha256:<64 hex>")
    for name in ("manifest_id", "platform"):
        if not _ONE_LINE.match(context[name]):
            problems.append(
                f"{name} {context[name][:100]!r} contains a newline or control character"
            )
    for key, value in context["labels"].items():
        if not (_ONE_LINE.match(key) and _ONE_LINE.match(value)):
            problems.append(f"label {key[:100]!r} contains a newline or control character")
    return problems


def dockerfile_context(
    store: LoadedStore, inputs: CombinationInputs, build_key: str
) -> dict[str, Any]:
    manifest = store.manifest(inputs.manifest_id)
    return {
        "base": inputs.base["pinned"],
        "fragments": {
            name: store.module_file(name, version).text.rstrip("\n") + "\n"
            for name, version in manifest.fragments.items()
        },
        "manifest_id": inputs.manifest_id,
        "platform": inputs.platform,
        "labels": oci_labels(inputs, build_key),
    }


def template_line_of(source: str, rendered_line: str) -> int | None:
    """The template line that reads exactly like a rendered line (when there is one), so a
    message can point into the template and not only into the rendered text."""
    wanted = rendered_line.strip()
    if not wanted:
        return None
    for number, line in enumerate(source.split("\n"), start=1):
        if line.strip() == wanted:
            return number
    return None


def rendered_problems(
    source: str, text: str, base: str, allowlist: frozenset[str] | None = None
) -> list[tuple[int | None, int, str]]:
    """(template line or None, rendered line, message) for each rule the rendered text breaks."""
    if allowlist is None:
        allowlist = dockerfile_syntax_allowlist()
    lines = text.split("\n")
    out = []
    for line, message in check_dockerfile(text, base, allowlist):
        original = lines[line - 1] if 0 < line <= len(lines) else ""
        out.append((template_line_of(source, original), line, message))
    return out


def describe_rendered(template_line: int | None, rendered_line: int) -> str:
    if template_line:
        return f"line {template_line} (rendered line {rendered_line})"
    return f"rendered line {rendered_line}"


def render_dockerfile(
    store: LoadedStore, inputs: CombinationInputs, build_key: str
) -> RenderedDockerfile:
    """Render one combination; raise StageError(stage="render") naming the template on failure."""
    manifest = store.manifest(inputs.manifest_id)
    template_file = store.template_file(manifest.template)
    context = dockerfile_context(store, inputs, build_key)
    what = (
        f"rendering {inputs.manifest_id} for {inputs.platform} failed in template "
        f"{manifest.template!r} ({template_file.rel_path}"
    )
    bad_values = context_problems(context)
    if bad_values:
        msg = f"{what}): {'; '.join(bad_values)}"
        raise StageError(msg, stage="render")
    try:
        text = render_template(template_file.text, context)
    except RenderError as exc:
        where = f"line {exc.line}" if exc.line else "template"
        msg = f"{what}, {where}): {exc.reason}"
        raise StageError(msg, stage="render") from None
    problems = rendered_problems(template_file.text, text, context["base"])
    if problems:
        details = "; ".join(
            f"{describe_rendered(t, r)}: {message}" for t, r, message in problems[:10]
        )
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        msg = (
            f"the Dockerfile of {inputs.manifest_id} for {inputs.platform} rendered from "
            f"template {manifest.template!r} ({template_file.rel_path}) is refused: "
            f"{details}{more}"
        )
        raise StageError(
            msg,
            stage="render",
        )
    return RenderedDockerfile(text=text, labels=context["labels"])
