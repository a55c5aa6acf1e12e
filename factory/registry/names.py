"""Names in registry URLs and image references, checked before they are used anywhere.

Owns the digest, tag and repository grammars (OCI distribution spec), the `/v2/...` paths built
from checked names, the split of `host:port/repo:tag` or `...@sha256:...` into its parts, the
`sha256:<hex>` name of some content, and whether a registry address is this machine.
"""

import hashlib
import ipaddress
import re
from urllib.parse import quote

from factory.errors import InvalidNameError
from factory.safe_json import printable

# Every value a registry answers with is checked against these before it is used anywhere: a
# digest goes into `FROM ...@<digest>`, labels, URLs and records.
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# The OCI distribution spec's tag and repository grammars.
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
REPOSITORY_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
MAX_REPOSITORY_CHARS = 255


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
