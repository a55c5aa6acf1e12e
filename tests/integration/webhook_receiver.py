"""A small real HTTP endpoint for alert tests: it records every JSON POST it gets.

`webhook_receiver()` serves on a free loopback port in a thread of the test process and stops
when the block ends; `closed_url()` names a loopback port nothing listens on (a webhook that is
down: connections are refused at once).
"""

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLOSED_URL = "http://127.0.0.1:1/hooks/alerts"  # nothing listens on port 1


@dataclass
class Receiver:
    url: str
    bodies: list[dict] = field(default_factory=list)
    status: int = 200

    def of_kind(self, kind: str) -> list[dict]:
        return [b for b in self.bodies if b.get("kind") == kind]

    def wait_for(self, kind: str, count: int = 1, timeout_s: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while len(self.of_kind(kind)) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.of_kind(kind)


@contextlib.contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            receiver.bodies.append(json.loads(body))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/alerts"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
