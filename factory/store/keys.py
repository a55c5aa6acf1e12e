"""Content keys and names: what decides a rebuild, a re-test, and where images live.

`build_key` covers everything that shapes the image; `record_key` adds the test suites, so a
suite-only change re-tests the existing image and writes a new record without a rebuild.
"""

import hashlib
import json
from dataclasses import dataclass

from factory.platforms import Platform
from factory.store.load import LoadedStore

# Bump when the way Factory builds changes (build flags, label set, cache handling): every
# combination then gets new keys and is rebuilt once.
BUILD_RECIPE_VERSION = "1"


def canonical_json(value: object) -> bytes:
    """JSON with sorted keys and no whitespace: the same value always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@dataclass(frozen=True)
class CombinationInputs:
    """Every input of one manifest x platform combination, with versions and content hashes."""

    manifest_id: str
    platform: str
    manifest_sha256: str
    build_fields_sha256: str
    template: dict
    fragments: list[dict]
    tests: list[dict]
    base: dict

    def as_record(self) -> dict:
        """The `inputs` section of a compatibility record."""
        return {
            "manifest_sha256": self.manifest_sha256,
            "build_fields_sha256": self.build_fields_sha256,
            "template": self.template,
            "fragments": self.fragments,
            "test_suites": self.tests,
            "base": self.base,
        }


def combination_inputs(
    store: LoadedStore, manifest_id: str, platform: Platform, base_digest: str
) -> CombinationInputs:
    """Collect the inputs of one combination; `base_digest` is the base's per-platform digest."""
    manifest = store.manifest(manifest_id)
    template = store.model.templates[manifest.template]
    base = store.model.bases[manifest.base]
    fragments = [
        {
            "name": name,
            "version": version,
            "sha256": store.module_file(name, version).sha256,
        }
        for name, version in manifest.fragments.items()
    ]
    tests = [
        {
            "name": suite,
            "sha256": store.suite_file(suite).sha256,
            "timeout_s": store.model.test_suites[suite].timeout_s,
        }
        for suite in manifest.tests
    ]
    return CombinationInputs(
        manifest_id=manifest_id,
        platform=platform.name,
        manifest_sha256=sha256_hex(canonical_json(manifest.model_dump(mode="json"))),
        build_fields_sha256=sha256_hex(canonical_json(manifest.build_fields())),
        template={
            "name": manifest.template,
            "version": template.version,
            "sha256": store.template_file(manifest.template).sha256,
        },
        fragments=fragments,
        tests=tests,
        base={
            "name": manifest.base,
            "ref": f"{base.image}:{base.tag}",
            "digest": base_digest,
            "pinned": f"{base.image}@{base_digest}",
        },
    )


def build_key(inputs: CombinationInputs) -> str:
    """sha256 over everything that shapes the image on this platform."""
    return sha256_hex(
        canonical_json(
            {
                "recipe": BUILD_RECIPE_VERSION,
                "manifest_id": inputs.manifest_id,
                "platform": inputs.platform,
                "manifest": inputs.build_fields_sha256,
                "template": inputs.template,
                "fragments": inputs.fragments,
                "base_digest": inputs.base["digest"],
            }
        )
    )


def record_key(inputs: CombinationInputs, build: str | None = None) -> str:
    """sha256 of the build key and each test suite (name, content, timeout)."""
    return sha256_hex(
        canonical_json({"build_key": build or build_key(inputs), "tests": inputs.tests})
    )


def image_ref(registry: str, manifest_id: str, platform: Platform, build: str) -> str:
    """Where the image of one build lives: one tag per platform and build key."""
    return f"{registry}/factory/{manifest_id}:{platform.slug}-{build[:12]}"


def cache_ref(registry: str, manifest_id: str, platform: Platform) -> str:
    """The per-platform BuildKit inline-cache ref: never shared across architectures."""
    return f"{registry}/factory/{manifest_id}-cache:{platform.slug}"
