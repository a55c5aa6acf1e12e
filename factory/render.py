"""Rendering a combination's Dockerfile from its template and fragments, deterministically.

The template gets `base` (the pinned `image@sha256:...` for this platform), `fragments` (name ->
snippet, in the manifest's order), `manifest_id`, `platform` and `labels`. The sandbox keeps a
template from reaching Python internals; StrictUndefined turns a typo into an error, not a blank.
"""

from dataclasses import dataclass

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from factory.errors import StageError
from factory.keys import CombinationInputs
from factory.store import LoadedStore

LABEL_PREFIX = "io.factory"


@dataclass(frozen=True)
class RenderedDockerfile:
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


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    # Dockerfile LABEL values are JSON-quoted so spaces and quotes survive.
    env.filters["dockerquote"] = lambda v: (
        '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    )
    return env


def render_dockerfile(
    store: LoadedStore, inputs: CombinationInputs, build_key: str
) -> RenderedDockerfile:
    """Render one combination; raise StageError(stage="render") naming the template on failure."""
    manifest = store.manifest(inputs.manifest_id)
    template_file = store.template_file(manifest.template)
    fragments = {
        name: store.module_file(name, version).text.rstrip("\n") + "\n"
        for name, version in manifest.fragments.items()
    }
    labels = oci_labels(inputs, build_key)
    try:
        template = _environment().from_string(template_file.text)
        text = template.render(
            base=inputs.base["pinned"],
            fragments=fragments,
            manifest_id=inputs.manifest_id,
            platform=inputs.platform,
            labels=labels,
        )
    except TemplateError as exc:
        where = f"line {exc.lineno}" if getattr(exc, "lineno", None) else "template"
        msg = (
            f"rendering {inputs.manifest_id} for {inputs.platform} failed in template "
            f"{manifest.template!r} ({template_file.rel_path}, {where}): {exc}"
        )
        raise StageError(msg, stage="render") from exc
    if not text.lstrip().upper().startswith(("FROM", "#", "ARG")):
        msg = (
            f"template {manifest.template!r} ({template_file.rel_path}) rendered no FROM line "
            f"first for {inputs.manifest_id} on {inputs.platform}"
        )
        raise StageError(msg, stage="render")
    return RenderedDockerfile(text=text, labels=labels)
