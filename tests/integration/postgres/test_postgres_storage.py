"""Dagster on PostgreSQL, configured as in production (deploy/dagster.yaml).

The fixture runs a real PostgreSQL server (Debian's `postgresql`, installed with apt-get when
missing): `initdb` into a temp folder and `postgres` on a free loopback port, both as the
`postgres` user, with password authentication; it stops the server by its PID at the end.

The instance takes deploy/dagster.yaml's storage, queue, concurrency, monitoring and retry
sections as they are, credentials from DAGSTER_PG_* variables, except `sslmode: require` (the test
server has no certificate). The run launcher (it needs a cluster) and the compute log manager (it
needs a bucket) are left at their local defaults.
"""

import dagster as dg
import pytest

from factory.pools import POOL_LIMITS
from factory_assets.pools import apply_pool_limits, current_pool_limits
from tests.integration.postgres_server import write_production_instance

pytestmark = pytest.mark.integration


@pytest.fixture
def postgres_server(postgres):
    return postgres


@pytest.fixture
def pg_instance(postgres_server, tmp_path, monkeypatch):
    """A Dagster instance with the production config, pointed at the test server."""
    for name, value in postgres_server.dagster_env().items():
        monkeypatch.setenv(name, value)
    write_production_instance(tmp_path)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        yield instance, tmp_path


manifests = dg.DynamicPartitionsDefinition(name="manifests_pg_test")


@dg.asset(partitions_def=manifests, pool="amd64")
def pg_probe(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """A pooled, partitioned asset, like a Factory chain's, that only reports its partition."""
    return dg.MaterializeResult(metadata={"manifest_id": context.partition_key})


def test_partition_materialized_on_postgres_and_read_back(pg_instance):
    instance, home = pg_instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert apply_pool_limits(instance) == dict(POOL_LIMITS)

    instance.add_dynamic_partitions(manifests.name, ["llm_factory", "other"])
    result = dg.materialize([pg_probe], partition_key="llm_factory", instance=instance)
    assert result.success

    # A second instance from the same config sees it all: it is in PostgreSQL, not in memory.
    with dg.DagsterInstance.from_config(str(home)) as reader:
        assert current_pool_limits(reader) == dict(POOL_LIMITS)
        assert sorted(reader.get_dynamic_partitions(manifests.name)) == ["llm_factory", "other"]
        run = reader.get_run_by_id(result.run_id)
        assert run is not None
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == "llm_factory"
        event = reader.get_latest_materialization_event(dg.AssetKey("pg_probe"))
        assert event is not None
        assert event.run_id == result.run_id
        materialization = event.asset_materialization
        assert materialization is not None
        assert materialization.partition == "llm_factory"
        assert materialization.metadata["manifest_id"].value == "llm_factory"
        # The step held an amd64 slot from the PostgreSQL concurrency tables, and gave it back.
        info = reader.event_log_storage.get_concurrency_info("amd64")
        assert info.slot_count == POOL_LIMITS["amd64"]
        assert info.claimed_slots == []
        steps = reader.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
        assert len(steps) == 1
