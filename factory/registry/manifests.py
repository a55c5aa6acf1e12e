"""What a registry stores and answers with: manifests and indexes, and every field checked.

Owns the media types Factory uses, descriptors, the `os/arch[/variant]` spelling of a platform,
building a multi-arch index, and parsing an answer's JSON, index entries and platforms with each
field checked (a `RegistryError` naming the field, never echoing the body). No HTTP here.
"""

import json
import re
from dataclasses import dataclass

from factory.errors import RegistryError
from factory.registry.names import is_digest
from factory.safe_json import printable

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
IMAGE_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
# Without this Accept header distribution answers a tag with a converted schema1 manifest whose
# digest is not the one the engine pulls: every manifest request sends it.
MANIFEST_ACCEPT = ", ".join((*INDEX_TYPES, *IMAGE_TYPES))
# Manifests are a few KiB; a body past this is not a manifest.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_INDEX_ENTRIES = 1024
# os, architecture and variant words of an index entry or image config (`linux`, `arm64`, `v8`).
PLATFORM_WORD = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Descriptor:
    """What an index entry says about one manifest: its digest, media type and size."""

    digest: str
    media_type: str
    size: int


def parse_platform(oci_platform: str) -> tuple[str, str, str]:
    """Turn `linux/arm64` or `linux/arm64/v8` into normalized (os, architecture, variant).

    arm64's only variant is v8, so containerd treats `linux/arm64` and `linux/arm64/v8` as one;
    we do the same so either spelling matches either kind of index entry.
    """
    parts = oci_platform.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        msg = f"platform {oci_platform!r} is not OS/ARCH[/VARIANT]"
        raise ValueError(msg)
    os_, arch = parts[0], parts[1]
    variant = parts[2] if len(parts) == 3 else ""
    if arch == "arm64" and not variant:
        variant = "v8"
    return os_, arch, variant


def format_platform(os_: str, arch: str, variant: str = "") -> str:
    """The `os/arch[/variant]` spelling of a platform, leaving out arm64's implied v8."""
    if variant and not (arch == "arm64" and variant == "v8"):
        return f"{os_}/{arch}/{variant}"
    return f"{os_}/{arch}"


def build_index(entries: list[tuple[Descriptor, str]], *, media_type: str | None = None) -> bytes:
    """Serialize a manifest list / OCI index for (descriptor, oci_platform) entries.

    Without `media_type` the kind follows the entries: a Docker manifest list when every entry is
    a Docker v2 manifest (what Docker 20.10 itself writes), an OCI index otherwise.
    """
    if not entries:
        msg = "an index needs at least one manifest"
        raise ValueError(msg)
    if media_type is None:
        docker_only = all(d.media_type == DOCKER_MANIFEST for d, _ in entries)
        media_type = DOCKER_MANIFEST_LIST if docker_only else OCI_INDEX
    if media_type not in INDEX_TYPES:
        msg = f"{media_type!r} is not an index media type"
        raise ValueError(msg)
    seen: set[tuple[str, str, str]] = set()
    manifests = []
    for descriptor, oci_platform in entries:
        os_, arch, variant = parse_platform(oci_platform)
        if (os_, arch, variant) in seen:
            msg = f"platform {oci_platform} is listed twice"
            raise ValueError(msg)
        seen.add((os_, arch, variant))
        platform = {"architecture": arch, "os": os_}
        if variant:
            platform["variant"] = variant
        manifests.append(
            {
                "mediaType": descriptor.media_type,
                "size": descriptor.size,
                "digest": descriptor.digest,
                "platform": platform,
            }
        )
    index = {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}
    return json.dumps(index, indent=3).encode()


@dataclass(frozen=True)
class IndexEntry:
    """One checked entry of an index: its descriptor and (os, architecture, variant) or None."""

    descriptor: Descriptor
    platform: tuple[str, str, str] | None


def answer_error(where: str, field: str, problem: str) -> RegistryError:
    """The error for a registry answer whose `field` (seen at `where`) is unusable."""
    return RegistryError(f"{where}: the registry's answer is unusable: {field} {problem}")


def shown(value: object) -> str:
    """A short, printable rendering of a value from an answer, for an error message."""
    return printable(value if isinstance(value, str) else json.dumps(value)[:200], limit=80)


def checked_digest(value: object, where: str, field: str) -> str:
    """`value` when it is a sha256 digest; a RegistryError naming `where` and `field` if not."""
    if not is_digest(value):
        problem = f"is not a sha256:<64 hex> digest ({shown(value)})"
        raise answer_error(where, field, problem)
    return str(value)


def checked_size(value: object, where: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise answer_error(where, field, f"is not a non-negative integer ({shown(value)})")
    return value


def checked_media_type(value: object, where: str, field: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise answer_error(where, field, f"is not a media type Factory uses ({shown(value)})")
    return value


def checked_word(value: object, where: str, field: str) -> str:
    if not isinstance(value, str) or not PLATFORM_WORD.fullmatch(value):
        raise answer_error(where, field, f"is not a platform word ({shown(value)})")
    return value


def checked_platform(fields: dict, where: str, prefix: str = "") -> tuple[str, str, str]:
    """(os, architecture, variant) of an index entry's `platform` or an image config, each
    word checked; `prefix` leads the field names in messages (`manifests[0].platform.`)."""
    os_ = checked_word(fields.get("os"), where, f"{prefix}os")
    arch = checked_word(fields.get("architecture"), where, f"{prefix}architecture")
    variant = fields.get("variant", "")
    if variant != "":
        variant = checked_word(variant, where, f"{prefix}variant")
    return os_, arch, variant


def parse_json_object(body: bytes, where: str) -> dict:
    """A registry answer's JSON object; RegistryError (never echoing the body) if it is not one."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        detail = f"line {exc.lineno} column {exc.colno}" if hasattr(exc, "lineno") else "invalid"
        msg = f"{where}: the registry sent invalid JSON ({detail})"
        raise RegistryError(msg) from None
    if not isinstance(value, dict):
        msg = f"{where}: expected a JSON object from the registry, got {type(value).__name__}"
        raise RegistryError(msg)
    return value


def parse_index(body: bytes, where: str = "index") -> list[IndexEntry]:
    """Every entry of an index body, each field checked; RegistryError naming the bad field."""
    index = parse_json_object(body, where)
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise answer_error(where, "manifests", f"is not a list ({shown(manifests)})")
    if len(manifests) > MAX_INDEX_ENTRIES:
        raise answer_error(where, "manifests", f"has {len(manifests)} entries (at most 1024)")
    entries = []
    for n, entry in enumerate(manifests):
        field = f"manifests[{n}]"
        if not isinstance(entry, dict):
            raise answer_error(where, field, f"is not an object ({shown(entry)})")
        descriptor = Descriptor(
            digest=checked_digest(entry.get("digest"), where, f"{field}.digest"),
            media_type=checked_media_type(
                entry.get("mediaType"), where, f"{field}.mediaType", (*IMAGE_TYPES, *INDEX_TYPES)
            ),
            size=checked_size(entry.get("size"), where, f"{field}.size"),
        )
        platform = entry.get("platform")
        parsed = None
        if platform is not None:
            if not isinstance(platform, dict):
                raise answer_error(
                    where, f"{field}.platform", f"is not an object ({shown(platform)})"
                )
            parsed = checked_platform(platform, where, f"{field}.platform.")
        entries.append(IndexEntry(descriptor, parsed))
    return entries


def index_platforms(body: bytes, where: str = "index") -> dict[str, str]:
    """Map each platform of an index body (`linux/arm64`) to its manifest digest.

    Every entry is checked first (RegistryError naming the field). Entries without a real
    platform (BuildKit's attestation manifests say `unknown/unknown`) are left out.
    """
    result: dict[str, str] = {}
    for entry in parse_index(body, where):
        if entry.platform is None or "unknown" in entry.platform[:2]:
            continue
        result.setdefault(format_platform(*entry.platform), entry.descriptor.digest)
    return result
