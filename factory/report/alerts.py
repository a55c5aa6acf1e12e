"""Alerts: a JSON POST to FACTORY_ALERT_WEBHOOK_URL, Slack-compatible and structured.

The body has Slack's `text` (an incoming webhook shows it as is) and the fields a program routes
on: `kind` (`regression`, `dead_letter`, `queue_backlog`, `cache_ratio`, `executor_lost`),
`manifest`, `platform`, `pool`, `build_id` and `links` (record, evidence, error file, run), plus
the kind's own figures under `details`.

Delivery never fails what triggered it: a build, a sensor tick. A webhook that does not answer,
answers an error status, redirects or hangs is tried again (FACTORY_ALERT_RETRIES more times,
FACTORY_ALERT_RETRY_DELAY_S apart, doubling) and then given up with one warning line. The answer's
body is never read beyond a small cap and never parsed or echoed; the URL is logged without its
path, which for Slack-style webhooks is the secret.

No Dagster import: the chain step, the sensors and the tests share this module.
"""

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from factory.env_numbers import env_float, env_int
from factory.settings import SettingsError

KINDS = ("regression", "dead_letter", "queue_backlog", "cache_ratio", "executor_lost")
MAX_URL_CHARS = 2048
ANSWER_CAP_BYTES = 64 * 1024
USER_AGENT = "factory-alerts/1"

Log = Callable[[str], None]


def _checked_url(name: str, raw: str) -> str:
    """`raw` as an http(s) URL with a host, or a SettingsError naming the variable."""
    from factory.safe_json import printable

    shown = printable(raw, limit=80)
    if len(raw) > MAX_URL_CHARS:
        msg = f"{name} is {len(raw)} characters long; at most {MAX_URL_CHARS}"
        raise SettingsError(msg)
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in raw):
        msg = f"{name}={shown} contains spaces or control characters; give an http(s) URL"
        raise SettingsError(msg)
    try:
        parts = urlsplit(raw)
        host = parts.hostname
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        msg = f"{name}={shown} is not a URL ({exc}); give http(s)://HOST[:PORT]/PATH"
        raise SettingsError(msg) from None
    if parts.scheme not in ("http", "https") or not host:
        msg = f"{name}={shown} is not an http(s) URL with a host; give http(s)://HOST[:PORT]/PATH"
        raise SettingsError(msg)
    return raw


def shown_url(url: str) -> str:
    """Scheme, host and port only: webhook paths and queries often hold the secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


# The numeric settings, each stated once: field, variable, reader, default, range, and what the
# number is (for the message that refuses a bad value).
NUMBERS = (
    ("queue_age_s", "FACTORY_ALERT_QUEUE_AGE_S", env_float, 1800.0, 1, 30 * 86400, "seconds"),
    ("cache_ratio", "FACTORY_ALERT_CACHE_RATIO", env_float, 0.5, 0, 1, "a ratio"),
    ("cache_builds", "FACTORY_ALERT_CACHE_BUILDS", env_int, 10, 1, 1000, "a number of builds"),
    ("timeout_s", "FACTORY_ALERT_TIMEOUT_S", env_float, 5.0, 0.1, 120, "seconds"),
    ("retries", "FACTORY_ALERT_RETRIES", env_int, 2, 0, 10, "a number of retries"),
    ("retry_delay_s", "FACTORY_ALERT_RETRY_DELAY_S", env_float, 1.0, 0, 60, "seconds"),
)
_DEFAULT = {field: default for field, _, _, default, *_ in NUMBERS}


@dataclass(frozen=True)
class AlertSettings:
    """What to alert on and where; every value from the environment, checked."""

    webhook_url: str | None = None
    queue_age_s: float = _DEFAULT["queue_age_s"]
    cache_ratio: float = _DEFAULT["cache_ratio"]
    cache_builds: int = _DEFAULT["cache_builds"]
    timeout_s: float = _DEFAULT["timeout_s"]
    retries: int = _DEFAULT["retries"]
    retry_delay_s: float = _DEFAULT["retry_delay_s"]
    dagster_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "AlertSettings":
        import os

        env = os.environ if environ is None else environ
        url = env.get("FACTORY_ALERT_WEBHOOK_URL", "").strip()
        ui = env.get("FACTORY_DAGSTER_URL", "").strip()
        webhook_url = _checked_url("FACTORY_ALERT_WEBHOOK_URL", url) if url else None
        numbers = {
            field: read(name, default, low=low, high=high, what=what, environ=env)
            for field, name, read, default, low, high, what in NUMBERS
        }
        dagster_url = _checked_url("FACTORY_DAGSTER_URL", ui).rstrip("/") if ui else None
        return cls(webhook_url=webhook_url, dagster_url=dagster_url, **numbers)

    def run_link(self, run_id: str | None) -> dict[str, str]:
        return {"run": f"{self.dagster_url}/runs/{run_id}"} if self.dagster_url and run_id else {}


@dataclass(frozen=True)
class Alert:
    """One alert: what happened (`text`), to what, and where to look."""

    kind: str
    text: str
    manifest: str | None = None
    platform: str | None = None
    pool: str | None = None
    build_id: str | None = None
    links: dict[str, str] = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @classmethod
    def for_build(cls, kind: str, text: str, build, **more) -> "Alert":
        """An alert about one build of one combination: `build` is what names it (a record or a
        dead letter: manifest_id, platform, pool, build_id)."""
        return cls(
            kind,
            text,
            manifest=build.manifest_id,
            platform=build.platform,
            pool=build.pool,
            build_id=build.build_id,
            **more,
        )

    def payload(self) -> dict:
        """The webhook's body: every field, with the text led by `[factory <kind>]`."""
        return {**asdict(self), "text": f"[factory {self.kind}] {self.text}"}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A POST that is redirected would be re-sent as a GET elsewhere: treat it as not delivered.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _post_once(url: str, body: bytes, timeout_s: float) -> str | None:
    """None when delivered (2xx), else why not."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as answer:
            answer.read(ANSWER_CAP_BYTES)
            status = answer.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return type(reason).__name__ + (f": {reason}" if str(reason) else "")
    except Exception as exc:  # http.client's own (a bad status line, ...): an answer, not a crash
        return type(exc).__name__
    return None if 200 <= status < 300 else f"HTTP {status}"


def send(alert: Alert, settings: AlertSettings, log: Log) -> bool:
    """POST the alert, retrying; True when delivered. Never raises."""
    if not settings.webhook_url:
        return False
    body = json.dumps(alert.payload(), sort_keys=True).encode()
    delay = settings.retry_delay_s
    why = None
    for attempt in range(settings.retries + 1):
        why = _post_once(settings.webhook_url, body, settings.timeout_s)
        if why is None:
            log(f"alert {alert.kind} delivered to {shown_url(settings.webhook_url)}: {alert.text}")
            return True
        if attempt < settings.retries:
            time.sleep(delay)
            delay *= 2
    log(
        f"alert {alert.kind} not delivered to {shown_url(settings.webhook_url)} after "
        f"{settings.retries + 1} attempts ({why}): {alert.text}"
    )
    return False
