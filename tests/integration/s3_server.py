"""A local S3-compatible endpoint for tests: moto's server mode on a free loopback port.

moto (the `dev` extra) answers the S3 API over HTTP, conditional writes included, so the S3 record
store is tested through the real boto3 client, its retries and its paginators. The server is a
subprocess of the test and is stopped by its PID (factory/services/server_process.py); every test
gets a bucket of its own.
"""

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import boto3

from factory.services import server_process

# moto accepts any credentials; these keep boto3 from looking for real ones.
ACCESS_KEY_ID = "factory-test"
SECRET_ACCESS_KEY = "factory-test-secret"
REGION = "us-east-1"
START_TIMEOUT_S = 30.0
PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    pid: int

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server; `config` goes to botocore's Config."""
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name=REGION,
            config=Config(max_pool_connections=32, **config),
        )

    @cached_property
    def admin(self) -> Any:
        """One client for the tests' own set-up (a boto3 client costs ~0.25 s to make)."""
        return self.client()

    def record_store_env(self, bucket: str, prefix: str) -> dict[str, str]:
        """The production variables (FACTORY_S3_*, AWS_*) that put the record store in `bucket`."""
        return {
            "FACTORY_S3_BUCKET": bucket,
            "FACTORY_S3_PREFIX": prefix,
            "FACTORY_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
        }

    def new_bucket(self) -> str:
        name = f"factory-test-{uuid.uuid4().hex[:12]}"
        self.admin.create_bucket(Bucket=name)
        return name


def _answers(endpoint_url: str) -> bool:
    try:
        boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name=REGION,
        ).list_buckets()
    except Exception:  # not listening yet: any connection error means "ask again"
        return False
    return True


@contextmanager
def moto_server(log_dir: Path) -> Iterator[S3Server]:
    """Start `moto_server` on a free port, yield it once it answers, then stop that PID."""
    executable = Path(sys.executable).with_name("moto_server")
    for attempt in range(PORT_ATTEMPTS):
        port = server_process.free_port()  # another process may take it before moto binds
        log_path = log_dir / f"moto-{port}.log"
        process = server_process.spawn([executable, "-H", "127.0.0.1", "-p", str(port)], log_path)
        try:
            endpoint = f"http://127.0.0.1:{port}"
            try:
                server_process.wait_until(
                    "moto_server to answer",
                    lambda endpoint=endpoint: _answers(endpoint),
                    [process],
                    lambda log_path=log_path: [log_path],
                    timeout_s=START_TIMEOUT_S,
                    poll_s=0.1,
                )
            except server_process.ServerExited:
                if attempt + 1 < PORT_ATTEMPTS:
                    continue  # most likely the port was taken: try another
                raise
            yield S3Server(endpoint_url=endpoint, pid=process.pid)
            return
        finally:
            server_process.stop(process, timeout_s=10)
