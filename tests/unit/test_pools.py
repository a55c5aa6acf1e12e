"""Pool limits: the defaults cover every pool of the platform table; overrides parse strictly."""

import pytest

from factory.platforms import PLATFORMS
from factory.pools import (
    ENV_VAR,
    MAX_LIMIT,
    POOL_LIMITS,
    PoolLimitsError,
    parse_pool_limits,
    pool_limits,
)


def test_every_pool_of_the_platform_table_has_a_default_limit():
    assert set(POOL_LIMITS) == {p.pool for p in PLATFORMS}
    assert dict(POOL_LIMITS) == {"amd64": 2, "arm64": 1, "gpu": 1}


def test_defaults_cannot_be_changed_by_accident():
    with pytest.raises(TypeError):
        POOL_LIMITS["amd64"] = 9  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("amd64=4", {"amd64": 4}),
        ("amd64=4,arm64=2", {"amd64": 4, "arm64": 2}),
        (" amd64 = 4 , gpu=0 ", {"amd64": 4, "gpu": 0}),
        (f"arm64={MAX_LIMIT}", {"arm64": MAX_LIMIT}),
    ],
)
def test_parse_accepts(text, expected):
    assert parse_pool_limits(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("amd64", "is not pool=n"),
        ("amd64=", "is not pool=n"),
        ("=4", "is not pool=n"),
        ("amd46=4", "unknown pool 'amd46' (pools: amd64, arm64, gpu)"),
        ("amd64=4,amd64=5", "given twice"),
        ("amd64=four", "must be a whole number, not 'four'"),
        ("amd64=2.5", "must be a whole number"),
        ("amd64=4_0", "must be a whole number"),
        ("amd64=-1", "between 0 and 1000, not -1"),
        (f"amd64={MAX_LIMIT + 1}", f"between 0 and 1000, not {MAX_LIMIT + 1}"),
        ("amd64=4,", "empty item"),
        (",", "empty item"),
    ],
)
def test_parse_rejects_with_a_message_naming_the_variable(text, message):
    with pytest.raises(PoolLimitsError, match=ENV_VAR) as info:
        parse_pool_limits(text)
    assert message in str(info.value)


def test_environment_overrides_only_the_pools_it_names():
    assert pool_limits({ENV_VAR: "amd64=4,arm64=2"}) == {"amd64": 4, "arm64": 2, "gpu": 1}
    assert pool_limits({}) == dict(POOL_LIMITS)
    assert pool_limits({ENV_VAR: "  "}) == dict(POOL_LIMITS)


def test_bad_environment_value_fails_loudly():
    with pytest.raises(PoolLimitsError, match="unknown pool 'x86'"):
        pool_limits({ENV_VAR: "x86=4"})


def test_apply_pool_limits_writes_them_into_the_instance_once(tmp_path):
    """The same storage call as `dagster instance concurrency set`, on a real SQLite instance."""
    import dagster as dg

    from factory_assets.pools import apply_pool_limits, current_pool_limits

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert apply_pool_limits(instance) == dict(POOL_LIMITS)
        assert current_pool_limits(instance) == dict(POOL_LIMITS)
        assert apply_pool_limits(instance) == {}, "unchanged limits are not written again"
        assert apply_pool_limits(instance, {"amd64": 4}) == {"amd64": 4}
        assert instance.event_log_storage.get_concurrency_info("amd64").slot_count == 4


def test_prepare_dagster_home_applies_the_limits(tmp_path, monkeypatch):
    import dagster as dg

    from factory.settings import Settings
    from factory_assets.instance import prepare_dagster_home
    from factory_assets.pools import current_pool_limits

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(ENV_VAR, "amd64=3")
    home = prepare_dagster_home(Settings.from_env())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert current_pool_limits(instance) == {"amd64": 3, "arm64": 1, "gpu": 1}
