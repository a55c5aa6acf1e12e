"""A small client for a distribution-v2 / OCI registry: manifests, indexes, blobs and tags.

Only what Factory needs: resolve tags and per-platform digests, push the offline base images, make
multi-arch indexes, list and delete. No authentication: the embedded default is a loopback
registry, and production registries are reached through the Docker Engine for pulls and pushes.
"""

import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import requests

from factory.errors import InvalidNameError, RegistryError, ServiceError
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

DEFAULT_TIMEOUT_S = 10.0
# Manifests are a few KiB; a body past this is not a manifest.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# How much of an unexpected answer's body goes into an error message.
ERROR_BODY_CHARS = 300
# A tags list page; distribution sends at most a few thousand names per page.
MAX_TAGS_BYTES = 8 * 1024 * 1024
# Blobs read through the client are image configs (KiB) or, in benchmarks, layers.
MAX_BLOB_BYTES = 512 * 1024 * 1024
# An answer must be complete within this many times the per-read timeout: a registry that sends
# one byte per second would otherwise keep a read alive for ever.
TOTAL_TIMEOUT_FACTOR = 3
MAX_INDEX_ENTRIES = 1024
MAX_TAG_PAGES = 100
READ_CHUNK = 64 * 1024

# Every value a registry answers with is checked against these before it is used anywhere: a
# digest goes into `FROM ...@<digest>`, labels, URLs and records.
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# The OCI distribution spec's tag and repository grammars.
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
REPOSITORY_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
MAX_REPOSITORY_CHARS = 255
# os, architecture and variant words of an index entry or image config (`linux`, `arm64`, `v8`).
PLATFORM_WORD = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Descriptor:
    """What an index entry says about one manifest: its digest, media type and size."""

    digest: str
    media_type: str
    size: int


def is_digest(value: object) -> bool:
    """Whether `value` is a `sha256:<64 lowercase hex>` digest string."""
    return isinstance(value, str) and DIGEST.fullmatch(value) is not None


def is_tag(value: object) -> bool:
    """Whether `value` is a tag by the OCI grammar (at most 128 characters)."""
    return isinstance(value, str) and TAG.fullmatch(value) is not None


def check_repository(repository: object) -> str:
    """`repository` when it is a repository name by the OCI grammar; InvalidNameError if not.

    The grammar has no `..`, `%`, `?` or empty components, so a checked name is safe in a URL.
    """
    if (
        not isinstance(repository, str)
        or not repository
        or len(repository) > MAX_REPOSITORY_CHARS
        or not all(REPOSITORY_COMPONENT.fullmatch(c) for c in repository.split("/"))
    ):
        msg = (
            f"{printable(repository, limit=80)} is not a repository name (lowercase letters, "
            "digits and single separators ._- between /-separated components)"
        )
        raise InvalidNameError(msg)
    return repository


def check_reference(reference: object) -> str:
    """`reference` when it is a tag or a sha256 digest; InvalidNameError if not."""
    if not (is_tag(reference) or is_digest(reference)):
        msg = (
            f"{printable(reference, limit=80)} is neither a tag (letters, digits, _.-, at most "
            "128 characters) nor a sha256:<64 hex> digest"
        )
        raise InvalidNameError(msg)
    return str(reference)


def registry_path(repository: str, kind: str, reference: str = "") -> str:
    """`/v2/<repository>/<kind>/<reference>` with both names checked and each segment quoted."""
    check_repository(repository)
    quoted = "/".join(quote(c, safe="") for c in repository.split("/"))
    if not reference:
        return f"/v2/{quoted}/{kind}/"
    check_reference(reference)
    # A checked digest's only punctuation is its `:`, which registries expect unescaped.
    ref = quote(reference, safe=":") if is_digest(reference) else quote(reference, safe="")
    return f"/v2/{quoted}/{kind}/{ref}"


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


@dataclass(frozen=True)
class IndexEntry:
    """One checked entry of an index: its descriptor and (os, architecture, variant) or None."""

    descriptor: Descriptor
    platform: tuple[str, str, str] | None


def _answer_error(where: str, field: str, problem: str) -> RegistryError:
    return RegistryError(f"{where}: the registry's answer is unusable: {field} {problem}")


def _show(value: object) -> str:
    return printable(value if isinstance(value, str) else json.dumps(value)[:200], limit=80)


def checked_digest(value: object, where: str, field: str) -> str:
    """`value` when it is a sha256 digest; a RegistryError naming `where` and `field` if not."""
    if not is_digest(value):
        problem = f"is not a sha256:<64 hex> digest ({_show(value)})"
        raise _answer_error(where, field, problem)
    return str(value)


def checked_size(value: object, where: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _answer_error(where, field, f"is not a non-negative integer ({_show(value)})")
    return value


def checked_media_type(value: object, where: str, field: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise _answer_error(where, field, f"is not a media type Factory uses ({_show(value)})")
    return value


def _checked_word(value: object, where: str, field: str) -> str:
    if not isinstance(value, str) or not PLATFORM_WORD.fullmatch(value):
        raise _answer_error(where, field, f"is not a platform word ({_show(value)})")
    return value


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
        raise _answer_error(where, "manifests", f"is not a list ({_show(manifests)})")
    if len(manifests) > MAX_INDEX_ENTRIES:
        raise _answer_error(where, "manifests", f"has {len(manifests)} entries (at most 1024)")
    entries = []
    for n, entry in enumerate(manifests):
        field = f"manifests[{n}]"
        if not isinstance(entry, dict):
            raise _answer_error(where, field, f"is not an object ({_show(entry)})")
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
                raise _answer_error(
                    where, f"{field}.platform", f"is not an object ({_show(platform)})"
                )
            os_ = _checked_word(platform.get("os"), where, f"{field}.platform.os")
            arch = _checked_word(
                platform.get("architecture"), where, f"{field}.platform.architecture"
            )
            variant = platform.get("variant", "")
            if variant != "":
                variant = _checked_word(variant, where, f"{field}.platform.variant")
            parsed = (os_, arch, variant)
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


@dataclass(frozen=True)
class Answer:
    """A registry's answer, its body read in full but bounded in size and time."""

    status_code: int
    headers: requests.structures.CaseInsensitiveDict
    content: bytes
    links: dict
    url: str

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class RegistryClient:
    """HTTP client for one registry, e.g. `RegistryClient("127.0.0.1:5000")`.

    Plain http is used for loopback addresses (as the Docker Engine does), https otherwise; an
    explicit `http://` or `https://` prefix wins. Names going into URLs are checked
    (`InvalidNameError`), and every value read from an answer is checked before it is returned
    (`RegistryError` naming the registry, repository, reference and field).
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
        path = registry_path(repository, "manifests", reference)
        response = self._request("HEAD", path, headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code == 404:
            return None
        self._expect(response, 200, what=f"HEAD {repository}:{reference}")
        where = self._ref(repository, reference)
        digest = response.headers.get("Docker-Content-Digest")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        length = response.headers.get("Content-Length")
        if not digest or not length or media_type not in (*INDEX_TYPES, *IMAGE_TYPES):
            # Some registries leave headers out of HEAD answers: ask for the body instead.
            media_type, digest, body = self.get_manifest(repository, reference)
            return Descriptor(digest=digest, media_type=media_type, size=len(body))
        checked_digest(digest, where, "the Docker-Content-Digest header")
        if is_digest(reference) and digest != reference:
            raise _answer_error(
                where, "the Docker-Content-Digest header", f"names another manifest ({digest})"
            )
        if not length.isdigit() or int(length) > MAX_MANIFEST_BYTES:
            problem = f"is not a manifest size ({_show(length)})"
            raise _answer_error(where, "the Content-Length header", problem)
        return Descriptor(digest=digest, media_type=media_type, size=int(length))

    def get_manifest(self, repository: str, reference: str) -> tuple[str, str, bytes]:
        """Fetch a manifest or index: (media type, digest, body); RegistryError when missing."""
        path = registry_path(repository, "manifests", reference)
        response = self._request("GET", path, headers={"Accept": MANIFEST_ACCEPT})
        where = self._ref(repository, reference)
        if response.status_code == 404:
            msg = (
                f"{where} does not exist: check the name and tag "
                f"(tags: {self._tags_hint(repository)})"
            )
            raise RegistryError(msg)
        self._expect(response, 200, what=f"GET manifest {repository}:{reference}")
        body = response.content
        digest = sha256_digest(body)
        if is_digest(reference) and reference != digest:
            msg = (
                f"{where}: the registry sent content with digest {digest}: the registry storage "
                "may be corrupt"
            )
            raise RegistryError(msg)
        document = parse_json_object(body, where)
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in (*INDEX_TYPES, *IMAGE_TYPES):
            # OCI manifests carry their own media type; trust it when the header is generic.
            named = document.get("mediaType", media_type)
            media_type = named if isinstance(named, str) else ""
        if media_type not in (*INDEX_TYPES, *IMAGE_TYPES):
            msg = (
                f"{where} is a {printable(media_type, limit=80) or 'untyped'} manifest, not a "
                "Docker v2 / OCI image or index: re-push it with a current Docker or BuildKit"
            )
            raise RegistryError(msg)
        if media_type in INDEX_TYPES:
            parse_index(body, where)  # every entry checked before anyone reads the body
        else:
            self._check_image_manifest(document, where)
        return media_type, digest, body

    def _check_image_manifest(self, manifest: dict, where: str) -> None:
        config = manifest.get("config")
        if not isinstance(config, dict):
            raise _answer_error(where, "config", f"is not an object ({_show(config)})")
        checked_digest(config.get("digest"), where, "config.digest")
        checked_size(config.get("size"), where, "config.size")
        layers = manifest.get("layers")
        if not isinstance(layers, list):
            raise _answer_error(where, "layers", f"is not a list ({_show(layers)})")
        for n, layer in enumerate(layers):
            if not isinstance(layer, dict):
                raise _answer_error(where, f"layers[{n}]", f"is not an object ({_show(layer)})")
            checked_digest(layer.get("digest"), where, f"layers[{n}].digest")
            checked_size(layer.get("size"), where, f"layers[{n}].size")

    def get_blob(self, repository: str, digest: str, *, max_bytes: int = MAX_BLOB_BYTES) -> bytes:
        """Fetch a blob (config or layer) and check its digest."""
        response = self._request(
            # Registries may redirect blob downloads to their storage (S3, a CDN).
            "GET",
            registry_path(repository, "blobs", digest),
            max_bytes=max_bytes,
            allow_redirects=True,
        )
        self._expect(response, 200, what=f"GET blob {repository}@{digest}")
        if sha256_digest(response.content) != digest:
            msg = f"{self.address}/{repository}: blob {digest} came back with different content"
            raise RegistryError(msg)
        return response.content

    def platforms(self, repository: str, reference: str) -> dict[str, str]:
        """Map each platform a tag or digest offers (`linux/arm64`) to its image manifest digest."""
        media_type, digest, body = self.get_manifest(repository, reference)
        where = self._ref(repository, reference)
        if media_type in INDEX_TYPES:
            return index_platforms(body, where)
        manifest = parse_json_object(body, where)
        config_digest = checked_digest(
            (manifest.get("config") or {}).get("digest"), where, "config.digest"
        )
        config_where = self._ref(repository, config_digest)
        config = parse_json_object(
            self.get_blob(repository, config_digest, max_bytes=MAX_MANIFEST_BYTES), config_where
        )
        os_ = _checked_word(config.get("os"), config_where, "os")
        arch = _checked_word(config.get("architecture"), config_where, "architecture")
        variant = config.get("variant", "")
        if variant != "":
            variant = _checked_word(variant, config_where, "variant")
        return {format_platform(os_, arch, variant): digest}

    def platform_digest(
        self,
        repository: str,
        reference: str,
        oci_platform: str,
        *,
        offered: dict[str, str] | None = None,
    ) -> str:
        """The image manifest digest for one platform of a tag or digest (index or single image);
        `offered` is `platforms(repository, reference)` when the caller already asked."""
        wanted = parse_platform(oci_platform)
        if offered is None:
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
        response = self._request("HEAD", registry_path(repository, "blobs", digest))
        if response.status_code == 404:
            return False
        self._expect(response, 200, what=f"HEAD blob {repository}@{digest}")
        return True

    def list_tags(self, repository: str) -> list[str]:
        """The repository's tags, sorted; empty when the repository does not exist.

        Each tag is checked against the OCI grammar, and a `Link` to the next page must stay on
        this registry's tags endpoint: a registry cannot send the client elsewhere.
        """
        tags: list[str] = []
        path = registry_path(repository, "tags") + "list"
        where = f"{self.address}/{repository} tags list"
        for page in self._pages(path, "", where, f"list tags of {repository}"):
            if page is None:
                return []
            names = page.get("tags")
            if names is None:
                names = []  # distribution says `null` for a repository without tags
            if not isinstance(names, list):
                raise _answer_error(where, "tags", f"is not a list ({_show(names)})")
            for n, tag in enumerate(names):
                if not is_tag(tag):
                    raise _answer_error(where, f"tags[{n}]", f"is not a tag ({_show(tag)})")
            tags.extend(names)
        return sorted(set(tags))

    def _pages(self, path: str, query: str, where: str, what: str) -> Iterator[dict | None]:
        """Each JSON page of a paginated listing (None for a 404): the `Link` to the next page
        must stay on this registry's `path`, so a registry cannot send the client elsewhere."""
        url = self.base_url + path + query
        for _ in range(MAX_TAG_PAGES):
            response = self._request("GET", url, max_bytes=MAX_TAGS_BYTES)
            if response.status_code == 404:
                yield None
                return
            self._expect(response, 200, what=what)
            yield parse_json_object(response.content, where)
            # Registries that paginate say where the next page is in a Link header.
            next_link = response.links.get("next", {}).get("url")
            if not next_link:
                return
            url = urljoin(url, next_link)
            parts = urlsplit(url)
            if f"{parts.scheme}://{parts.netloc}" != self.base_url or parts.path != path:
                problem = f"points away from {self.base_url}{path} ({_show(next_link)})"
                raise _answer_error(where, "the Link header", problem)
        raise _answer_error(where, "the Link header", f"goes past {MAX_TAG_PAGES} pages")

    # -- writing --------------------------------------------------------------------------------

    def push_blob(self, repository: str, data: bytes) -> str:
        """Upload a blob in one request unless the repository has it; returns its digest."""
        digest = sha256_digest(data)
        if self.blob_exists(repository, digest):
            return digest
        start = self._request("POST", registry_path(repository, "blobs", "") + "uploads/")
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
            registry_path(repository, "manifests", reference),
            data=body,
            headers={"Content-Type": media_type},
        )
        self._expect(response, 201, what=f"PUT manifest {repository}:{reference}")
        digest = sha256_digest(body)
        answered = response.headers.get("Docker-Content-Digest")
        if answered and answered != digest:
            msg = (
                f"registry {self.address} stored {repository}:{reference} as "
                f"{printable(answered, limit=80)}, expected {digest}"
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
        if not is_digest(digest):
            msg = (
                f"delete_manifest needs a digest, got {printable(digest, limit=80)!r}: resolve "
                "tags with head_digest"
            )
            raise InvalidNameError(msg)
        response = self._request("DELETE", registry_path(repository, "manifests", digest))
        if response.status_code == 404:
            return
        if response.status_code == 405:
            msg = (
                f"registry {self.address} refuses deletes: enable them in its config "
                "(storage.delete.enabled: true) and restart it"
            )
            raise RegistryError(msg)
        self._expect(response, 202, what=f"DELETE {repository}@{digest}")

    # -- referrers, copies, the catalog (attestations, quarantine, gc) ---------------------------

    def get_referrers(self, repository: str, digest: str) -> bytes | None:
        """The OCI 1.1 referrers API's index body for `digest`; None when the registry does not
        offer the API (it answers 404, as distribution 2.8 does): use the fallback tag then."""
        response = self._request(
            "GET", registry_path(repository, "referrers", digest), headers={"Accept": OCI_INDEX}
        )
        if response.status_code == 404:
            return None
        self._expect(response, 200, what=f"GET referrers of {repository}@{digest}")
        return response.content

    def mount_blob(self, repository: str, digest: str, source: str) -> None:
        """Make a blob of `source` available in `repository`: a cross-repository mount when the
        registry does it, else a download and upload."""
        if self.blob_exists(repository, digest):
            return
        path = registry_path(repository, "blobs", "") + "uploads/"
        check_repository(source)
        response = self._request("POST", f"{path}?mount={digest}&from={quote(source, safe='/')}")
        if response.status_code == 201:
            return
        self._expect(response, 202, what=f"mount blob {digest} from {source} into {repository}")
        location = response.headers.get("Location")
        if location:  # the registry opened an upload instead: drop it, then copy the bytes
            self._request("DELETE", urljoin(self.base_url + "/", location))
        self.push_blob(repository, self.get_blob(source, digest))

    def catalog(self) -> list[str]:
        """Every repository the registry lists (`/v2/_catalog`), each name checked, sorted."""
        names: list[str] = []
        where = f"{self.address} catalog"
        for page in self._pages("/v2/_catalog", "?n=1000", where, "list repositories"):
            if page is None:
                msg = f"{where}: the registry does not list its repositories (/v2/_catalog: 404)"
                raise RegistryError(msg)
            repositories = page.get("repositories") or []
            if not isinstance(repositories, list):
                raise _answer_error(where, "repositories", f"is not a list ({_show(repositories)})")
            for n, name in enumerate(repositories):
                try:
                    names.append(check_repository(name))
                except InvalidNameError:
                    raise _answer_error(
                        where, f"repositories[{n}]", f"is not a repository ({_show(name)})"
                    ) from None
        return sorted(set(names))

    # -- plumbing -------------------------------------------------------------------------------

    def _ref(self, repository: str, reference: str) -> str:
        sep = "@" if reference.startswith("sha256:") else ":"
        return (
            f"{self.address}/{printable(repository, limit=80)}{sep}{printable(reference, limit=80)}"
        )

    def _request(
        self,
        method: str,
        path_or_url: str,
        *,
        max_bytes: int = MAX_MANIFEST_BYTES,
        allow_redirects: bool = False,
        **kwargs,
    ) -> Answer:
        """Send one request and read its answer within `max_bytes` and the total time limit.

        A 2xx body past `max_bytes` is a RegistryError; other bodies are cut (only a little of
        them goes into messages). A registry that does not answer, or answers too slowly, is a
        ServiceError.
        """
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        deadline = time.monotonic() + self.timeout * TOTAL_TIMEOUT_FACTOR
        try:
            response = self._session.request(
                method,
                url,
                timeout=self.timeout,
                stream=True,
                allow_redirects=allow_redirects,
                **kwargs,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise self._no_answer(method, url, type(exc).__name__) from exc
        except requests.RequestException as exc:
            msg = f"registry {self.address}: {method} {url} failed: {type(exc).__name__}"
            raise RegistryError(msg) from exc
        try:
            ok = 200 <= response.status_code < 300
            limit = max_bytes if ok else ERROR_BODY_CHARS * 4
            declared = response.headers.get("Content-Length", "")
            if ok and method != "HEAD" and declared.isdigit() and int(declared) > max_bytes:
                raise self._too_big(method, url, max_bytes)
            chunks: list[bytes] = []
            size = 0
            if method != "HEAD":
                while size <= limit:
                    if time.monotonic() > deadline:
                        raise self._no_answer(method, url, "the answer took too long")
                    chunk = response.raw.read1(READ_CHUNK, decode_content=True)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
            if ok and size > max_bytes:
                raise self._too_big(method, url, max_bytes)
            content = b"".join(chunks)[:limit]
            return Answer(
                status_code=response.status_code,
                headers=response.headers,
                content=content,
                links=response.links,
                url=url,
            )
        except (requests.RequestException, OSError) as exc:
            raise self._no_answer(method, url, type(exc).__name__) from exc
        except Exception as exc:  # urllib3's own errors (protocol, decode, read timeout)
            if isinstance(exc, (RegistryError, ServiceError)):
                raise
            raise self._no_answer(method, url, type(exc).__name__) from exc
        finally:
            response.close()

    def _no_answer(self, method: str, url: str, why: str) -> ServiceError:
        msg = (
            f"registry {self.address} does not answer ({method} {url}: {why}): check it with "
            "`factory services status`, start the local one with `factory services up`, or point "
            "FACTORY_REGISTRY at yours"
        )
        return ServiceError(msg)

    def _too_big(self, method: str, url: str, max_bytes: int) -> RegistryError:
        msg = (
            f"registry {self.address}: {method} {url} answered with more than {max_bytes} bytes, "
            "more than any manifest or tag list: check the registry"
        )
        return RegistryError(msg)

    def _expect(self, response: Answer, status: int, *, what: str) -> None:
        if response.status_code == status:
            return
        body = printable(response.text[:ERROR_BODY_CHARS].strip()) if response.content else ""
        msg = (
            f"registry {self.address}: {printable(what, limit=200)} answered HTTP "
            f"{response.status_code} (expected {status}): {body or 'no body'}; check the "
            "registry's log"
        )
        raise RegistryError(msg)

    def _tags_hint(self, repository: str) -> str:
        try:
            tags = self.list_tags(repository)
        except (RegistryError, ServiceError):
            return "unknown"
        return ", ".join(tags[:10]) + (", ..." if len(tags) > 10 else "") if tags else "none"
