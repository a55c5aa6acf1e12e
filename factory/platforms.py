"""The platform table: few platforms, tied to hardware, each with its slug, pool and placement."""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Platform:
    """A build/test target and where its work runs."""

    name: str  # as written in the manifest store, e.g. "linux/amd64+gpu"
    slug: str  # asset-key and partition safe, e.g. "linux_amd64_gpu"
    pool: str  # Dagster pool = run queue, e.g. "gpu"
    oci_platform: str  # what BuildKit and the engine are given with --platform
    gpu: bool = False
    # Kubernetes placement for the step pods of this pool (dagster-k8s op tags).
    k8s_pod_spec: dict[str, Any] = field(default_factory=dict)
    k8s_container: dict[str, Any] = field(default_factory=dict)

    @property
    def os(self) -> str:
        return self.oci_platform.split("/")[0]

    @property
    def arch(self) -> str:
        return self.oci_platform.split("/")[1]


_BUILD_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}


def _on_arch(arch: str) -> dict[str, Any]:
    """Step pods go to nodes of the platform's CPU architecture."""
    return {"node_selector": {"kubernetes.io/arch": arch}}


def _cpu_platform(arch: str) -> Platform:
    """A plain Linux platform: its pool and its nodes are named by its architecture."""
    return Platform(
        name=f"linux/{arch}",
        slug=f"linux_{arch}",
        pool=arch,
        oci_platform=f"linux/{arch}",
        k8s_pod_spec=_on_arch(arch),
        k8s_container={"resources": _BUILD_RESOURCES},
    )


PLATFORMS: tuple[Platform, ...] = (
    _cpu_platform("amd64"),
    _cpu_platform("arm64"),
    Platform(
        name="linux/amd64+gpu",
        slug="linux_amd64_gpu",
        pool="gpu",
        oci_platform="linux/amd64",
        gpu=True,
        k8s_pod_spec={
            **_on_arch("amd64"),
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
        k8s_container={
            "resources": {
                "requests": _BUILD_RESOURCES["requests"],
                "limits": {**_BUILD_RESOURCES["limits"], "nvidia.com/gpu": 1},
            }
        },
    ),
)

BY_NAME: dict[str, Platform] = {p.name: p for p in PLATFORMS}
BY_SLUG: dict[str, Platform] = {p.slug: p for p in PLATFORMS}
PLATFORM_NAMES: tuple[str, ...] = tuple(BY_NAME)


def platform(name_or_slug: str) -> Platform:
    """Look a platform up by name (`linux/arm64`) or slug (`linux_arm64`)."""
    found = BY_NAME.get(name_or_slug) or BY_SLUG.get(name_or_slug)
    if found is None:
        known = ", ".join(PLATFORM_NAMES)
        msg = f"unknown platform {name_or_slug!r} (known: {known})"
        raise ValueError(msg)
    return found
