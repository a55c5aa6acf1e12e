"""What a container image holds, as a CycloneDX SBOM: built, validated, and made from an image.

The packages come from `factory.supply_chain.image_scan` (a filesystem tar stream) by way of
`factory.supply_chain.image_export` (a created container's export through the Docker Engine). The
BOM is
built with cyclonedx-python-lib and is deterministic for a given build: the serial number comes
from the build id and the caller may pin the timestamp.
"""

import functools
import json
import re
import time
import tomllib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.component_evidence import ComponentEvidence, Occurrence
from cyclonedx.output.json import BY_SCHEMA_VERSION as JSON_OUTPUTTERS
from cyclonedx.schema import SchemaVersion
from packageurl import PackageURL

from factory.platforms import platform as lookup_platform
from factory.settings import PROJECT_ROOT
from factory.supply_chain.image_export import exported_packages
from factory.supply_chain.image_scan import KINDS, Package, scan_filesystem, unique_packages

__all__ = [
    "KINDS",
    "SPEC_VERSION",
    "Package",
    "SbomSubject",
    "build_sbom",
    "image_repository",
    "image_sbom",
    "scan_filesystem",
    "unique_packages",
    "validate_sbom",
]

# 1.6 rather than the library's newest (1.7): it is the version scanners and Dependency-Track
# read today, and it already has everything this BOM uses (evidence occurrences, tools.components).
SPEC_VERSION = SchemaVersion.V1_6

_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:factory:sbom")


@dataclass(frozen=True)
class SbomSubject:
    """The image a BOM describes and the build that made it: the BOM's `metadata.component`.

    Checked when made: a bad subject is a caller's bug, refused before an image is read.
    """

    image_ref: str
    image_digest: str
    platform: str
    manifest_id: str
    build_id: str

    def __post_init__(self) -> None:
        lookup_platform(self.platform)  # raises ValueError naming the known platforms
        if not _DIGEST.match(self.image_digest):
            msg = f"image digest {self.image_digest!r} of {self.image_ref} is not `algorithm:hex`"
            raise ValueError(msg)


def build_sbom(
    packages: Iterable[Package], subject: SbomSubject, *, timestamp: datetime | None = None
) -> dict[str, Any]:
    """The CycloneDX BOM (as parsed JSON) of one image and the packages found in it.

    Same inputs and timestamp give the same document: the serial number is derived from the
    build id and every bom-ref is a purl, so two BOMs of one image can be diffed.
    """
    _check_timestamp(timestamp)
    image = _image_component(subject)
    components = [_package_component(p) for p in unique_packages(packages)]
    bom = Bom(
        serial_number=uuid.uuid5(_SERIAL_NAMESPACE, subject.build_id),
        metadata=BomMetaData(
            component=image,
            tools=[],
            timestamp=timestamp or datetime.now(UTC),
        ),
        components=components,
    )
    bom.metadata.tools.components.add(_tool_component())
    bom.register_dependency(image, components)
    return json.loads(JSON_OUTPUTTERS[SPEC_VERSION](bom).output_as_string())


def _check_timestamp(timestamp: datetime | None) -> None:
    """A naive timestamp is a caller's bug: refused before an image is read, not after."""
    if timestamp is not None and timestamp.tzinfo is None:
        msg = "the SBOM timestamp must be timezone-aware (UTC)"
        raise ValueError(msg)


def _image_component(subject: SbomSubject) -> Component:
    """The image as the BOM's subject: named by repository, versioned by digest."""
    repository = image_repository(subject.image_ref)
    purl = PackageURL(
        type="oci",
        name=repository.rsplit("/", 1)[-1].lower(),
        version=subject.image_digest,
        qualifiers={
            "repository_url": repository,
            "arch": lookup_platform(subject.platform).arch,
        },
    )
    properties = {
        "factory:image_ref": subject.image_ref,
        "factory:platform": subject.platform,
        "factory:manifest_id": subject.manifest_id,
        "factory:build_id": subject.build_id,
    }
    return Component(
        type=ComponentType.CONTAINER,
        name=repository,
        version=subject.image_digest,
        purl=purl,
        bom_ref=purl.to_string(),
        properties=[Property(name=k, value=v) for k, v in properties.items()],
    )


def image_repository(image_ref: str) -> str:
    """`host:port/path/name:tag@digest` -> `host:port/path/name` (a port's colon is not a tag)."""
    ref = image_ref.split("@", 1)[0]
    colon = ref.rfind(":")
    return ref[:colon] if colon > ref.rfind("/") else ref


def _package_component(package: Package) -> Component:
    properties = [Property(name="factory:kind", value=package.kind)]
    if package.source:
        properties.append(Property(name="factory:source_package", value=package.source))
    return Component(
        type=ComponentType.APPLICATION if package.kind == "busybox" else ComponentType.LIBRARY,
        name=package.name,
        version=package.version,
        purl=PackageURL.from_string(package.purl),
        bom_ref=package.purl,
        evidence=ComponentEvidence(occurrences=[Occurrence(location=package.found_at)]),
        properties=properties,
    )


def _tool_component() -> Component:
    return Component(
        type=ComponentType.APPLICATION,
        name="factory",
        version=_factory_version(),
        bom_ref="tool:factory",
    )


@functools.cache
def _factory_version() -> str:
    """The installed distribution's version, or the checkout's pyproject when run uninstalled."""
    try:
        return importlib_metadata.version("factory")
    except importlib_metadata.PackageNotFoundError:
        with (PROJECT_ROOT / "pyproject.toml").open("rb") as pyproject:
            return str(tomllib.load(pyproject)["project"]["version"])


def validate_sbom(bom: dict[str, Any]) -> None:
    """Check a BOM against the CycloneDX JSON schema (strict: unknown properties are errors)."""
    # Imported here: the schema validator pulls in jsonschema's format checkers, which take
    # 1.5 s to import, and builds do not validate (tests and `factory verify` do).
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SPEC_VERSION).validate_str(json.dumps(bom))
    if error is not None:
        message = getattr(error.data, "message", str(error.data))
        msg = f"the SBOM is not valid CycloneDX {SPEC_VERSION.to_version()}: {message}"
        raise ValueError(msg)


def image_sbom(
    docker_client: Any, subject: SbomSubject, *, timestamp: datetime | None = None
) -> tuple[dict[str, Any], float]:
    """The SBOM of a local image and the seconds it took.

    A created container is never started: its export is the image's flattened filesystem without
    running anything from it (which for a foreign arch would need emulation). The container is
    removed whatever happens. Engine and stream failures raise StageError(stage="sbom");
    bad arguments raise ValueError before the engine is asked anything.
    """
    _check_timestamp(timestamp)
    started = time.perf_counter()
    packages = exported_packages(docker_client, subject.image_ref, subject.platform)
    bom = build_sbom(packages, subject, timestamp=timestamp)
    return bom, time.perf_counter() - started
