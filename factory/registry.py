"""A small client for a distribution-v2 / OCI registry: manifests, indexes, blobs and tags.

Only what Factory needs: resolve tags and per-platform digests, push the offline base images, make
multi-arch indexes, list and delete. No authentication: the embedded default is a loopback
registry, and production registries are reached through the Docker Engine for pulls and pushes.
"""

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from urllib.parse import urljoin

import requests

from factory.errors import RegistryError, ServiceError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
IMAGE_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
# Without this Accept header distribution answers a tag with a converted schema1 manifest whose
# digest is not the one the engine pulls: every manifest request sends it.
MANIFEST_ACCEPT = ", ".join((*INDEX_TYPES, *IMAGE_TYPES))

DEFAULT_TIMEOUT_S = 10.0
# Manifests are a few KiB; a body past this is not a manifest.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# How much of an unexpected answer's body goes into an error message.
ERROR_BODY_CHARS = 300


@dataclass(frozen=True)
class Descriptor:
    """What an index entry says about one manifest: its digest, media type and size."""

    digest: str
    media_type: str
    size: int


def split_reference(ref: str) -> tuple[str, str, str]:
    """Split `host:port/repo/name:tag` or `...@sha256:...` into (registry, repository, reference).

    Raises ValueError when the reference has no registry part (Docker Hub is not used here) or
    neither a tag nor a digest.
    """
    name, sep, digest = ref.partition("@")
    if sep:
        registry, repository = split_image(name)
        return registry, repository, digest
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon <= slash:
        msg = f"image reference {ref!r} has neither a tag nor a digest"
        raise ValueError(msg)
    registry, repository = split_image(ref[:colon])
    return registry, repository, ref[colon + 1 :]


def split_image(image: str) -> tuple[str, str]:
    """Split `127.0.0.1:5000/factory/base/busybox` into (`127.0.0.1:5000`, `factory/base/busybox`).

    The first component is the registry when it looks like a host (has a dot or a port, or is
    `localhost`), as the Docker CLI decides. A tag or digest is refused: use `split_reference`.
    """
    host, sep, repository = image.partition("/")
    if not sep or not repository or not ("." in host or ":" in host or host == "localhost"):
        msg = f"image {image!r} names no registry: expected HOST[:PORT]/REPOSITORY"
        raise ValueError(msg)
    if "@" in repository or ":" in repository:
        msg = f"image {image!r} has a tag or digest: use split_reference for full references"
        raise ValueError(msg)
    return host, repository


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


def index_platforms(body: bytes) -> dict[str, str]:
    """Map each platform of an index body (`linux/arm64`) to its manifest digest.

    Entries without a real platform (BuildKit's attestation manifests say `unknown/unknown`) are
    left out.
    """
    result: dict[str, str] = {}
    for entry in json.loads(body).get("manifests") or []:
        platform = entry.get("platform") or {}
        os_, arch = platform.get("os"), platform.get("architecture")
        if not os_ or not arch or "unknown" in (os_, arch):
            continue
        result.setdefault(format_platform(os_, arch, platform.get("variant", "")), entry["digest"])
    return result


def sha256_digest(data: bytes) -> str:
    """The `sha256:<hex>` digest of some bytes, as registries name content."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_loopback(address: str) -> bool:
    """Whether `host[:port]` (or `[v6]:port`) names this machine."""
    if address.startswith("["):
        host = address[1:].partition("]")[0]
    else:
        host = address.rpartition(":")[0] if address.count(":") == 1 else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RegistryClient:
    """HTTP client for one registry, e.g. `RegistryClient("127.0.0.1:5000")`.

    Plain http is used for loopback addresses (as the Docker Engine does), https otherwise; an
    explicit `http://` or `https://` prefix wins.
    """

    def __init__(self, address: str, *, timeout: float = DEFAULT_TIMEOUT_S):
        scheme, sep, rest = address.partition("://")
        if sep:
            if scheme not in ("http", "https"):
                msg = f"registry address {address!r}: scheme must be http or https"
                raise ValueError(msg)
            self.address = rest.rstrip("/")
        else:
            self.address = address.rstrip("/")
            scheme = "http" if is_loopback(self.address) else "https"
        self.base_url = f"{scheme}://{self.address}"
        self.timeout = timeout
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url!r})"

    # -- reading --------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that a v2 registry answers at this address."""
        response = self._request("GET", "/v2/")
        if response.status_code == 401:
            msg = (
                f"registry {self.address} asks for authentication, which Factory's registry client "
                "does not do: use a registry without auth for FACTORY_REGISTRY"
            )
            raise RegistryError(msg)
        self._expect(response, 200, what="the v2 API check")

    def head_digest(self, repository: str, reference: str) -> str | None:
        """The manifest digest a tag or digest reference points to; None when it does not exist."""
        descriptor = self.head_manifest(repository, reference)
        return descriptor.digest if descriptor else None

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        """Digest, media type and size of a manifest, from a HEAD request; None when missing."""
        path = f"/v2/{repository}/manifests/{reference}"
        response = self._request("HEAD", path, headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            return None
        self._expect(response, 200, what=f"HEAD {repository}:{reference}")
        digest = response.headers.get("Docker-Content-Digest")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        length = response.headers.get("Content-Length")
        if not digest or not length or media_type not in (*INDEX_TYPES, *IMAGE_TYPES):
            # Some registries leave headers out of HEAD answers: ask for the body instead.
            media_type, digest, body = self.get_manifest(repository, reference)
            return Descriptor(digest=digest, media_type=media_type, size=len(body))
        return Descriptor(digest=digest, media_type=media_type, size=int(length))

    def get_manifest(self, repository: str, reference: str) -> tuple[str, str, bytes]:
        """Fetch a manifest or index: (media type, digest, body); RegistryError when missing."""
        path = f"/v2/{repository}/manifests/{reference}"
        response = self._request("GET", path, headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            msg = (
                f"{self._ref(repository, reference)} does not exist: check the name and tag "
                f"(tags: {self._tags_hint(repository)})"
            )
            raise RegistryError(msg)
        self._expect(response, 200, what=f"GET manifest {repository}:{reference}")
        body = response.content
        if len(body) > MAX_MANIFEST_BYTES:
            msg = f"{self._ref(repository, reference)}: manifest of {len(body)} bytes is too big"
            raise RegistryError(msg)
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and reference != digest:
            msg = (
                f"{self._ref(repository, reference)}: the registry sent content with digest "
                f"{digest}: the registry storage may be corrupt"
            )
            raise RegistryError(msg)
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in (*INDEX_TYPES, *IMAGE_TYPES):
            # OCI manifests carry their own media type; trust it when the header is generic.
            media_type = _json_object(body, self.address, repository, reference).get(
                "mediaType", media_type
            )
        if media_type not in (*INDEX_TYPES, *IMAGE_TYPES):
            msg = (
                f"{self._ref(repository, reference)} is a {media_type or 'untyped'} manifest, "
                "not a Docker v2 / OCI image or index: re-push it with a current Docker or BuildKit"
            )
            raise RegistryError(msg)
        return media_type, digest, body

    def get_blob(self, repository: str, digest: str) -> bytes:
        """Fetch a blob (config or layer) and check its digest."""
        response = self._request("GET", f"/v2/{repository}/blobs/{digest}")
        self._expect(response, 200, what=f"GET blob {repository}@{digest}")
        if sha256_digest(response.content) != digest:
            msg = f"{self.address}/{repository}: blob {digest} came back with different content"
            raise RegistryError(msg)
        return response.content

    def platforms(self, repository: str, reference: str) -> dict[str, str]:
        """Map each platform a tag or digest offers (`linux/arm64`) to its image manifest digest."""
        media_type, digest, body = self.get_manifest(repository, reference)
        if media_type in INDEX_TYPES:
            return index_platforms(body)
        manifest = _json_object(body, self.address, repository, reference)
        config_digest = (manifest.get("config") or {}).get("digest")
        if not config_digest:
            msg = f"{self._ref(repository, reference)}: the manifest names no config blob"
            raise RegistryError(msg)
        config = _json_object(
            self.get_blob(repository, config_digest), self.address, repository, config_digest
        )
        os_, arch = config.get("os"), config.get("architecture")
        if not os_ or not arch:
            msg = f"{self._ref(repository, reference)}: the image config has no os/architecture"
            raise RegistryError(msg)
        return {format_platform(os_, arch, config.get("variant", "")): digest}

    def platform_digest(self, repository: str, reference: str, oci_platform: str) -> str:
        """The image manifest digest for one platform of a tag or digest (index or single image)."""
        wanted = parse_platform(oci_platform)
        offered = self.platforms(repository, reference)
        for name, digest in offered.items():
            if parse_platform(name) == wanted:
                return digest
        have = ", ".join(sorted(offered)) or "none"
        msg = (
            f"{self._ref(repository, reference)} has no {oci_platform} image (it has: {have}): "
            "build and push that platform, or drop it from the manifest"
        )
        raise RegistryError(msg)

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the repository already has a blob."""
        response = self._request("HEAD", f"/v2/{repository}/blobs/{digest}")
        if response.status_code == 404:
            return False
        self._expect(response, 200, what=f"HEAD blob {repository}@{digest}")
        return True

    def list_tags(self, repository: str) -> list[str]:
        """The repository's tags, sorted; empty when the repository does not exist."""
        tags: list[str] = []
        url = f"{self.base_url}/v2/{repository}/tags/list"
        while url:
            response = self._request("GET", url)
            if response.status_code == 404:
                return []
            self._expect(response, 200, what=f"list tags of {repository}")
            page = _json_object(response.content, self.address, repository, "tags")
            tags.extend(page.get("tags") or [])
            # Registries that paginate say where the next page is in a Link header.
            next_link = response.links.get("next", {}).get("url")
            url = urljoin(url, next_link) if next_link else ""
        return sorted(set(tags))

    # -- writing --------------------------------------------------------------------------------

    def push_blob(self, repository: str, data: bytes) -> str:
        """Upload a blob in one request unless the repository has it; returns its digest."""
        digest = sha256_digest(data)
        if self.blob_exists(repository, digest):
            return digest
        start = self._request("POST", f"/v2/{repository}/blobs/uploads/")
        self._expect(start, 202, what=f"start a blob upload to {repository}")
        location = start.headers.get("Location")
        if not location:
            msg = f"registry {self.address} started an upload to {repository} but gave no Location"
            raise RegistryError(msg)
        url = urljoin(self.base_url + "/", location)
        url += ("&" if "?" in url else "?") + f"digest={digest}"
        done = self._request(
            "PUT", url, data=data, headers={"Content-Type": "application/octet-stream"}
        )
        self._expect(done, 201, what=f"upload blob {digest} to {repository}")
        return digest

    def put_manifest(self, repository: str, reference: str, media_type: str, body: bytes) -> str:
        """Store a manifest or index under a tag (or its digest); returns its digest."""
        response = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            data=body,
            headers={"Content-Type": media_type},
        )
        self._expect(response, 201, what=f"PUT manifest {repository}:{reference}")
        digest = sha256_digest(body)
        answered = response.headers.get("Docker-Content-Digest")
        if answered and answered != digest:
            msg = (
                f"registry {self.address} stored {repository}:{reference} as {answered}, "
                f"expected {digest}"
            )
            raise RegistryError(msg)
        return digest

    def put_index(
        self,
        repository: str,
        tag: str,
        manifests: list[tuple[str, str]],
        *,
        media_type: str | None = None,
    ) -> str:
        """Tag a multi-platform index of (image digest, oci_platform) entries; returns its digest.

        Each entry's media type and size come from the registry (HEAD), so the entries must
        already be pushed to this repository.
        """
        entries = []
        for digest, oci_platform in manifests:
            descriptor = self.head_manifest(repository, digest)
            if descriptor is None:
                msg = (
                    f"{self.address}/{repository}@{digest} ({oci_platform}) does not exist: push "
                    "each platform's image before making the index"
                )
                raise RegistryError(msg)
            if descriptor.media_type not in IMAGE_TYPES:
                msg = (
                    f"{self.address}/{repository}@{digest} is a {descriptor.media_type}, not an "
                    "image manifest: an index entry must be a single-platform image"
                )
                raise RegistryError(msg)
            entries.append((descriptor, oci_platform))
        body = build_index(entries, media_type=media_type)
        return self.put_manifest(repository, tag, json.loads(body)["mediaType"], body)

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (its tags go with it); a missing manifest is not an error.

        Blobs stay on disk until the registry's garbage collection runs.
        """
        if not digest.startswith("sha256:"):
            msg = f"delete_manifest needs a digest, got {digest!r}: resolve tags with head_digest"
            raise ValueError(msg)
        response = self._request("DELETE", f"/v2/{repository}/manifests/{digest}")
        if response.status_code == 404:
            return
        if response.status_code == 405:
            msg = (
                f"registry {self.address} refuses deletes: enable them in its config "
                "(storage.delete.enabled: true) and restart it"
            )
            raise RegistryError(msg)
        self._expect(response, 202, what=f"DELETE {repository}@{digest}")

    # -- plumbing -------------------------------------------------------------------------------

    def _ref(self, repository: str, reference: str) -> str:
        sep = "@" if reference.startswith("sha256:") else ":"
        return f"{self.address}/{repository}{sep}{reference}"

    def _request(self, method: str, path_or_url: str, **kwargs) -> requests.Response:
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        try:
            return self._session.request(method, url, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            msg = (
                f"registry {self.address} does not answer ({method} {url}: "
                f"{type(exc).__name__}): check it with `factory services status`, start the "
                "local one with `factory services up`, or point FACTORY_REGISTRY at yours"
            )
            raise ServiceError(msg) from exc

    def _expect(self, response: requests.Response, status: int, *, what: str) -> None:
        if response.status_code == status:
            return
        body = response.text[:ERROR_BODY_CHARS].strip() if response.content else ""
        msg = (
            f"registry {self.address}: {what} answered HTTP {response.status_code} "
            f"(expected {status}): {body or 'no body'}; check the registry's log"
        )
        raise RegistryError(msg)

    def _tags_hint(self, repository: str) -> str:
        try:
            tags = self.list_tags(repository)
        except (RegistryError, ServiceError):
            return "unknown"
        return ", ".join(tags[:10]) + (", ..." if len(tags) > 10 else "") if tags else "none"


def _json_object(body: bytes, address: str, repository: str, reference: str) -> dict:
    try:
        value = json.loads(body)
    except ValueError as exc:
        msg = f"{address}/{repository}:{reference}: the registry sent invalid JSON ({exc})"
        raise RegistryError(msg) from exc
    if not isinstance(value, dict):
        msg = f"{address}/{repository}:{reference}: expected a JSON object from the registry"
        raise RegistryError(msg)
    return value
