"""One registry's HTTP endpoint: bounded requests, the errors they end in, paginated listings.

Owns how Factory talks HTTP to a registry: plain http for loopback addresses and https otherwise,
every answer read in full within a size and a total time limit (`Answer`), a registry that does
not answer as a `ServiceError` (worth a retry) and one that answers wrongly as a `RegistryError`,
and listings whose next-page `Link` must stay on the registry. `RegistryClient` builds the
registry API on top of this.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests

from factory.errors import RegistryError, ServiceError
from factory.registry.manifests import (
    MAX_MANIFEST_BYTES,
    answer_error,
    parse_json_object,
    shown,
)
from factory.registry.names import is_loopback
from factory.safe_json import printable

DEFAULT_TIMEOUT_S = 10.0
# How much of an unexpected answer's body goes into an error message.
ERROR_BODY_CHARS = 300
# A tags list page; distribution sends at most a few thousand names per page.
MAX_TAGS_BYTES = 8 * 1024 * 1024
# An answer must be complete within this many times the per-read timeout: a registry that sends
# one byte per second would otherwise keep a read alive for ever.
TOTAL_TIMEOUT_FACTOR = 3
MAX_TAG_PAGES = 100
READ_CHUNK = 64 * 1024


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


class RegistryHttp:
    """The HTTP endpoint of one registry, e.g. `RegistryHttp("127.0.0.1:5000")`.

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
                problem = f"points away from {self.base_url}{path} ({shown(next_link)})"
                raise answer_error(where, "the Link header", problem)
        raise answer_error(where, "the Link header", f"goes past {MAX_TAG_PAGES} pages")
