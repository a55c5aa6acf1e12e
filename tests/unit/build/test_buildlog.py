"""Which step hit the cache: BuildKit's plain progress matched to Dockerfile instructions."""

import pytest

from factory.build.buildlog import (
    build_steps,
    cache_imports,
    dockerfile_instructions,
    matching_steps,
    normalize_instruction,
    run_steps,
)

SECURITY = """\
# A non-root service account.
RUN set -e; \\
    grep -q '^app:' /etc/passwd || echo 'app:x:10001:10001::/home/app:/bin/sh' >> /etc/passwd; \\
    mkdir -p /home/app
"""
CORE = """\
RUN set -e; \\
    mkdir -p /opt/factory/bin
ENV PATH=/opt/factory/bin:/bin
"""

# Shaped like a real 20.10 log: vertices out of order, a vertex printed twice, continuation lines
# joined with their indentation kept.
LOG = """\
#1 [internal] load build definition from Dockerfile
#1 DONE 0.0s

#9 importing cache manifest from 127.0.0.1:5000/factory/x-cache:linux_arm64
#9 DONE 0.0s

#10 importing cache manifest from 127.0.0.1:5000/factory/stack-abc-cache:linux_arm64
#10 DONE 0.0s

#4 [1/5] FROM 127.0.0.1:5000/factory/base/busybox@sha256:d95d
#4 DONE 0.0s

#6 [3/5] RUN set -e;     mkdir -p /opt/factory/bin
#6 CACHED

#5 [2/5] RUN set -e;     grep -q '^app:' /etc/passwd || echo 'app:x:10001:10001::/home/app:/bin/sh' >> /etc/passwd;     mkdir -p /home/app
#5 sha256:078d
#5 CACHED

#7 [4/5] RUN printf 'worker' > /opt/factory/bin/worker
#7 0.2 started
#7 [4/5] RUN printf 'worker' > /opt/factory/bin/worker
#7 DONE 0.3s

#8 [5/5] WORKDIR /opt/factory
#8 CACHED
"""  # noqa: E501


def test_steps_in_index_order_with_cache_state():
    steps = build_steps(LOG)
    assert [(s.index, s.keyword, s.cached) for s in steps] == [
        (1, "FROM", False),
        (2, "RUN", True),
        (3, "RUN", True),
        (4, "RUN", False),
        (5, "WORKDIR", True),
    ]
    assert {s.total for s in steps} == {5}


def test_run_steps_and_imports():
    assert [s.index for s in run_steps(LOG)] == [2, 3, 4]
    assert cache_imports(LOG) == [
        "127.0.0.1:5000/factory/x-cache:linux_arm64",
        "127.0.0.1:5000/factory/stack-abc-cache:linux_arm64",
    ]


def test_stable_steps_are_found_by_their_fragment_text():
    stable = matching_steps(LOG, [SECURITY, CORE])
    assert [(s.index, s.cached) for s in stable] == [(2, True), (3, True)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SECURITY, [normalize_instruction(SECURITY.split("\n", 1)[1])]),
        (CORE, ["RUN set -e; mkdir -p /opt/factory/bin", "ENV PATH=/opt/factory/bin:/bin"]),
        ("RUN a \\\n# a comment inside\n  b\n", ["RUN a b"]),
        ("", []),
    ],
)
def test_dockerfile_instructions(text, expected):
    assert dockerfile_instructions(text) == expected
