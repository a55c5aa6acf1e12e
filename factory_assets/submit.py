"""Submitting planned combinations to a Dagster deployment's run queue, and following them.

One code path for both targets: the dagster-graphql client's `submit_job_execution` (the
`launchPipelineExecution` mutation), over HTTP to a webserver (`--url`), or in this process
against the local instance and the project's workspace (`WorkspaceTransport`: the same GraphQL
schema the webserver serves, executed here). Either way the instance's run coordinator queues the
run: the daemon dequeues it by priority (`dagster/priority`) and within its pool's limit, exactly
as for runs from the UI, a backfill or a sensor.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import dagster as dg
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from gql import Client, gql
from gql.transport import Transport
from gql.transport.requests import RequestsHTTPTransport
from graphql import ExecutionResult, print_ast

from factory.errors import FactoryError
from factory.plan.decisions import PlanItem
from factory.platforms import platform as lookup_platform
from factory_assets.jobs import build_job_name, run_tags
from factory_assets.partitions import partitions_name
from factory_assets.platform_chain import chain_step_name

HTTP_TIMEOUT_S = 60
POLL_S = 2.0
SUBMITTED_BY_TAG = "factory/submitted_by"
TERMINAL = {
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
}

ADD_PARTITION = """
mutation($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""
REPOSITORIES = """
{ repositoriesOrError { __typename ... on RepositoryConnection {
    nodes { name location { name } pipelines { name } } } ... on PythonError { message } } }
"""
QUEUE_DAEMON = """
{ instance { daemonHealth { daemonStatus(daemonType: "QUEUED_RUN_COORDINATOR") { healthy } } } }
"""


class SubmitError(FactoryError):
    """The deployment refused a submission or could not be reached."""


class WorkspaceTransport(Transport):
    """GraphQL executed in this process against a workspace, as the webserver would."""

    def __init__(self, context):
        from dagster_graphql.schema import create_schema

        self._context = context
        self._schema = create_schema()

    def execute(self, request, *args, **kwargs) -> ExecutionResult:
        result = asyncio.run(
            self._schema.execute_async(
                print_ast(request.document),
                context_value=self._context.create_request_context(),
                variable_values=request.variable_values,
                operation_name=request.operation_name,
            )
        )
        return ExecutionResult(data=result.data, errors=result.errors)


@dataclass
class Deployment:
    """Where runs go: a GraphQL client and a raw GraphQL executor on the same transport."""

    client: DagsterGraphQLClient
    query: Callable[[str, dict | None], dict]
    shown: str


def parse_url(url: str) -> tuple[str, int | None, bool, str]:
    """(host, port, https, path prefix) of a webserver URL, or a SubmitError naming --url."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        msg = f"--url {url!r} is not a URL ({exc}); give http://HOST:3000"
        raise SubmitError(msg) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        msg = f"--url {url!r} is not an http(s) URL of a Dagster webserver; give http://HOST:3000"
        raise SubmitError(msg)
    return parts.hostname, port, parts.scheme == "https", parts.path.rstrip("/")


def _raw_query(client: Client, shown: str) -> Callable[[str, dict | None], dict]:
    def run(query: str, variables: dict | None = None) -> dict:
        try:
            return client.execute(gql(query), variable_values=variables)
        except Exception as exc:  # gql raises transport, server and query errors alike
            msg = f"{shown} did not answer the GraphQL query: {type(exc).__name__}: {exc}"
            raise SubmitError(msg) from exc

    return run


@contextlib.contextmanager
def remote_deployment(url: str) -> Iterator[Deployment]:
    host, port, https, prefix = parse_url(url)
    scheme = "https" if https else "http"
    endpoint = f"{scheme}://{host}{f':{port}' if port else ''}{prefix}/graphql"
    transport = RequestsHTTPTransport(url=endpoint, use_json=True, timeout=HTTP_TIMEOUT_S)
    client = DagsterGraphQLClient(
        host, port_number=port, use_https=https, path_prefix=prefix, transport=transport
    )
    yield Deployment(client, _raw_query(Client(transport=transport), endpoint), endpoint)


@contextlib.contextmanager
def local_deployment(instance: dg.DagsterInstance, workspace: str) -> Iterator[Deployment]:
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    target = WorkspaceFileTarget(paths=[workspace])
    with WorkspaceProcessContext(instance, target, code_server_log_level="WARNING") as context:
        transport = WorkspaceTransport(context)
        client = DagsterGraphQLClient("localhost", transport=transport)
        shown = f"the instance at {instance.root_directory}"
        yield Deployment(client, _raw_query(Client(transport=transport), shown), shown)


def build_repository(deployment: Deployment, job_name: str) -> dict:
    """The repository selector of the code location that has `job_name`."""
    data = deployment.query(REPOSITORIES, None)["repositoriesOrError"]
    if data["__typename"] != "RepositoryConnection":
        msg = f"{deployment.shown} could not list its code locations: {data.get('message', '')}"
        raise SubmitError(msg)
    found = [
        {"repositoryLocationName": n["location"]["name"], "repositoryName": n["name"]}
        for n in data["nodes"]
        if any(p["name"] == job_name for p in n["pipelines"])
    ]
    if len(found) != 1:
        msg = (
            f"{deployment.shown} has {len(found)} code locations with the job {job_name}; "
            "expected the Factory code location exactly once (is it loaded? see the UI's "
            "Deployment page)"
        )
        raise SubmitError(msg)
    return found[0]


def queue_daemon_healthy(deployment: Deployment) -> bool:
    data = deployment.query(QUEUE_DAEMON, None)
    return bool(data["instance"]["daemonHealth"]["daemonStatus"]["healthy"])


def add_partition(deployment: Deployment, selector: dict, item: PlanItem) -> None:
    slug = lookup_platform(item.platform).slug
    variables = {"selector": selector, "name": partitions_name(slug), "key": item.manifest_id}
    result = deployment.query(ADD_PARTITION, variables)["addDynamicPartition"]
    if result["__typename"] not in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"):
        msg = (
            f"{deployment.shown} refused partition {item.manifest_id} of {item.platform}: "
            f"{result['__typename']}: {result.get('message', '')}"
        )
        raise SubmitError(msg)


def submit_item(deployment: Deployment, selector: dict, item: PlanItem, *, force: bool) -> str:
    """Queue one combination's run; its run id."""
    target = lookup_platform(item.platform)
    run_config = (
        {"ops": {chain_step_name(target): {"config": {"force_rebuild": True}}}} if force else {}
    )
    tags = {
        **run_tags(item),
        "dagster/partition": item.manifest_id,
        SUBMITTED_BY_TAG: "factory submit",
    }
    try:
        return deployment.client.submit_job_execution(
            build_job_name(target.slug),
            repository_location_name=selector["repositoryLocationName"],
            repository_name=selector["repositoryName"],
            run_config=run_config,
            tags=tags,
        )
    except DagsterGraphQLClientError as exc:
        detail = f"{exc.args[0]}: {exc.args[1]}" if len(exc.args) > 1 else str(exc)
        msg = (
            f"{deployment.shown} refused the run of {item.manifest_id} on {item.platform}: "
            f"{detail[:2000]}"
        )
        raise SubmitError(msg) from None


def run_status(deployment: Deployment, run_id: str) -> dg.DagsterRunStatus:
    try:
        return deployment.client.get_run_status(run_id)
    except DagsterGraphQLClientError as exc:
        msg = f"{deployment.shown} could not tell the status of run {run_id}: {exc}"
        raise SubmitError(msg) from None


def follow(
    deployment: Deployment,
    run_ids: list[str],
    *,
    timeout_s: float,
    on_end: Callable[[str, dg.DagsterRunStatus], None],
    on_wait: Callable[[int, float], None],
) -> dict[str, dg.DagsterRunStatus]:
    """Poll the runs until each ended (or `timeout_s` passed); their last statuses."""
    statuses: dict[str, dg.DagsterRunStatus] = {}
    started = time.monotonic()
    last_note = started
    pending = list(run_ids)
    while pending:
        for run_id in list(pending):
            status = run_status(deployment, run_id)
            statuses[run_id] = status
            if status in TERMINAL:
                pending.remove(run_id)
                on_end(run_id, status)
        if not pending or time.monotonic() - started > timeout_s:
            break
        if time.monotonic() - last_note >= 60:
            last_note = time.monotonic()
            on_wait(len(pending), time.monotonic() - started)
        time.sleep(POLL_S)
    return statuses
