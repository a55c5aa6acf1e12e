"""Engine prune planning on a fake Docker client: which tags go, which stay, what they free."""

import pytest

from factory.build.engine_prune import cache_limit_bytes, plan_engine_prune
from factory.settings import SettingsError

REG = "127.0.0.1:5000"


class FakeApi:
    def __init__(self, containers):
        self._containers = containers

    def containers(self, all=False):
        return self._containers


class FakeClient:
    def __init__(self, images, containers=(), cache=()):
        self._df = {"Images": images, "BuildCache": list(cache), "LayersSize": 0}
        self.api = FakeApi(list(containers))

    def df(self):
        return self._df


class FakeEngine:
    docker_host = "unix:///fake.sock"

    def __init__(self, client):
        self.client = client


def image(n, tags, *, created=None, size=1000, shared=100, labels=None):
    return {
        "Id": f"sha256:{n:064x}",
        "RepoTags": tags,
        "Created": created if created is not None else n,
        "Size": size,
        "SharedSize": shared,
        "Labels": labels or {},
    }


def tag(manifest="m", slug="linux_amd64", n=0, ns="factory"):
    return f"{REG}/{ns}/{manifest}:{slug}-{n:012x}"


def test_newest_per_combination_stay_and_shared_names_only_untag():
    images = [
        image(1, [tag(n=1)]),
        image(2, [tag(n=2)]),
        image(3, [tag(n=3), f"{REG}/factory/m-cache:linux_amd64"]),  # newest, also the cache
        image(4, [tag(slug="linux_arm64", n=4)]),
        image(5, [tag(n=5, ns="factory-quarantine")]),
        image(6, [tag(n=6, ns="factory-quarantine")]),
        image(7, [f"{REG}/factory/base/busybox:1.35"]),
        image(8, ["<none>:<none>"], labels={"io.factory.build-key": "k"}),
        image(9, [], labels={}),  # untagged, not Factory's
        # The oldest build tag of m on amd64, on an image another name still holds.
        image(10, [tag(n=10), f"{REG}/factory/elsewhere:latest"], created=0),
        image(11, [tag(n=11)], created=1, labels={}),
    ]
    plan = plan_engine_prune(FakeEngine(FakeClient(images)), keep=1, registry=REG)
    removed = {r.ref: r for r in plan.removals}
    assert set(removed) == {
        tag(n=1),
        tag(n=2),
        tag(n=10),
        tag(n=11),
        tag(n=5, ns="factory-quarantine"),
        images[7]["Id"],
    }
    assert removed[tag(n=1)].frees_bytes == 900
    assert removed[tag(n=10)].frees_bytes == 0  # only untagged: `elsewhere:latest` keeps it
    assert removed[images[7]["Id"]].combination == "untagged"
    assert removed[tag(n=5, ns="factory-quarantine")].combination == "m linux_amd64 (quarantine)"
    assert plan.image_bytes == 900 * 5


def test_images_of_containers_are_kept_with_the_container_named():
    images = [image(1, [tag(n=1)]), image(2, [tag(n=2)])]
    containers = [
        {"ImageID": images[0]["Id"], "Names": ["/busy"], "State": "running"},
    ]
    plan = plan_engine_prune(FakeEngine(FakeClient(images, containers)), keep=1, registry=REG)
    assert plan.removals == []
    [kept] = plan.kept
    assert kept.ref == tag(n=1) and kept.reason == "used by running container busy"


def test_build_cache_over_the_limit_is_planned():
    cache = [{"Size": 600, "InUse": False}, {"Size": 500, "InUse": True}]
    plan = plan_engine_prune(
        FakeEngine(FakeClient([], cache=cache)), keep=1, registry=REG, cache_limit=100
    )
    assert (plan.cache_bytes, plan.cache_reclaimable_bytes) == (1100, 600)
    assert "prune about 600 bytes" in plan.lines()[-1]


@pytest.mark.parametrize(
    ("value", "expected"), [("", 10_000_000_000), ("0", 0), ("1.5", 1_500_000_000)]
)
def test_cache_limit(monkeypatch, value, expected):
    monkeypatch.setenv("FACTORY_ENGINE_CACHE_GB", value)
    assert cache_limit_bytes() == expected


@pytest.mark.parametrize("value", ["-1", "lots", "nan", "1e9"])
def test_bad_cache_limits_are_named(monkeypatch, value):
    monkeypatch.setenv("FACTORY_ENGINE_CACHE_GB", value)
    with pytest.raises(SettingsError, match="FACTORY_ENGINE_CACHE_GB"):
        cache_limit_bytes()
