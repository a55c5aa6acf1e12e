"""The registry API Factory uses, on one registry: manifests, indexes, blobs, tags and referrers.

Only what Factory needs: resolve tags and per-platform digests, push the offline base images, make
multi-arch indexes, list and delete, copy blobs between repositories, read the referrers API and
the catalog. No authentication: the embedded default is a loopback registry, and production
registries are reached through the Docker Engine for pulls and pushes. Names are checked in
`factory.registry.names`, answers in `factory.registry.manifests`, and the HTTP underneath is
`factory.registry.transport`.
"""

import json
from urllib.parse import quote, urljoin

from factory.errors import InvalidNameError, RegistryError, ServiceError
from factory.registry.manifests import (
    IMAGE_TYPES,
    INDEX_TYPES,
    MANIFEST_ACCEPT,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    Descriptor,
    answer_error,
    build_index,
    checked_digest,
    checked_platform,
    checked_size,
    format_platform,
    index_platforms,
    parse_index,
    parse_json_object,
    parse_platform,
    shown,
)
from factory.registry.names import (
    check_repository,
    is_digest,
    is_tag,
    registry_path,
    sha256_digest,
)
from factory.registry.transport import RegistryHttp
from factory.safe_json import printable

# Blobs read through the client are image configs (KiB) or, in benchmarks, layers.
MAX_BLOB_BYTES = 512 * 1024 * 1024


class RegistryClient(RegistryHttp):
    """The registry API on one registry, e.g. `RegistryClient("127.0.0.1:5000")`.

    Names going into URLs are checked (`InvalidNameError`), and every value read from an answer is
    checked before it is returned (`RegistryError` naming the registry, repository, reference and
    field).
    """

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
            raise answer_error(
                where, "the Docker-Content-Digest header", f"names another manifest ({digest})"
            )
        if not length.isdigit() or int(length) > MAX_MANIFEST_BYTES:
            problem = f"is not a manifest size ({shown(length)})"
            raise answer_error(where, "the Content-Length header", problem)
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
            raise answer_error(where, "config", f"is not an object ({shown(config)})")
        checked_digest(config.get("digest"), where, "config.digest")
        checked_size(config.get("size"), where, "config.size")
        layers = manifest.get("layers")
        if not isinstance(layers, list):
            raise answer_error(where, "layers", f"is not a list ({shown(layers)})")
        for n, layer in enumerate(layers):
            if not isinstance(layer, dict):
                raise answer_error(where, f"layers[{n}]", f"is not an object ({shown(layer)})")
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
        return {format_platform(*checked_platform(config, config_where)): digest}

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
                raise answer_error(where, "tags", f"is not a list ({shown(names)})")
            for n, tag in enumerate(names):
                if not is_tag(tag):
                    raise answer_error(where, f"tags[{n}]", f"is not a tag ({shown(tag)})")
            tags.extend(names)
        return sorted(set(tags))

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
        entries = [
            (
                self.image_descriptor(
                    repository,
                    digest,
                    missing=f"({oci_platform}) does not exist: push each platform's image before "
                    "making the index",
                ),
                oci_platform,
            )
            for digest, oci_platform in manifests
        ]
        body = build_index(entries, media_type=media_type)
        return self.put_manifest(repository, tag, json.loads(body)["mediaType"], body)

    def image_descriptor(self, repository: str, digest: str, *, missing: str) -> Descriptor:
        """The descriptor of a single-platform image this repository holds, for an index entry.

        RegistryError when there is none (`missing` goes after its name: what it is and what to
        do) or when the digest names an index.
        """
        descriptor = self.head_manifest(repository, digest)
        if descriptor is None:
            msg = f"{self.address}/{repository}@{digest} {missing}"
            raise RegistryError(msg)
        if descriptor.media_type not in IMAGE_TYPES:
            msg = (
                f"{self.address}/{repository}@{digest} is a {descriptor.media_type}, not an "
                "image manifest: an index entry must be a single-platform image"
            )
            raise RegistryError(msg)
        return descriptor

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
                raise answer_error(where, "repositories", f"is not a list ({shown(repositories)})")
            for n, name in enumerate(repositories):
                try:
                    names.append(check_repository(name))
                except InvalidNameError:
                    raise answer_error(
                        where, f"repositories[{n}]", f"is not a repository ({shown(name)})"
                    ) from None
        return sorted(set(names))

    def _tags_hint(self, repository: str) -> str:
        try:
            tags = self.list_tags(repository)
        except (RegistryError, ServiceError):
            return "unknown"
        return ", ".join(tags[:10]) + (", ..." if len(tags) > 10 else "") if tags else "none"
