"""Reading BuildKit's plain progress output: steps and cache hits."""

import pytest

from factory.build.engine import count_build_steps

# Trimmed from a real `DOCKER_BUILDKIT=1 docker build --progress=plain` (engine 20.10) log.
LOG = """\
#1 [internal] load build definition from Dockerfile
#1 DONE 0.0s

#4 [1/5] FROM 127.0.0.1:5000/factory/base/busybox@sha256:cfc6
#4 DONE 0.0s

#6 importing cache manifest from 127.0.0.1:5000/factory/edge_proxy-cache:linux_amd64
#6 ERROR: 127.0.0.1:5000/factory/edge_proxy-cache:linux_amd64: not found

#5 [2/5] RUN set -e; grep -q '^app:' /etc/passwd
#5 sha256:db24
#5 CACHED

#7 [3/5] RUN set -e; mkdir -p /opt/factory/bin
#7 CACHED

#8 [4/5] RUN set -e; mkdir -p /srv/www
#8 DONE 0.2s

#9 [5/5] WORKDIR /opt/factory
#9 DONE 0.0s

#10 exporting to image
#10 CACHED
"""


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (LOG, (5, 2)),
        ("", (0, 0)),
        # A multi-stage build names its stage before the step counter.
        ("#3 [builder 2/3] RUN make\n#3 CACHED\n#4 [stage-1 3/3] COPY x y\n#4 DONE\n", (3, 1)),
    ],
)
def test_count_build_steps(log, expected):
    assert count_build_steps(log) == expected


def test_redact_hides_every_secret_value_longest_first():
    from factory.build.engine import redact

    secrets = {"short": "abc", "long": "xxabcxx"}
    assert redact("a xxabcxx and abc", secrets) == "a [secret:long] and [secret:short]"
    assert redact("nothing here", secrets) == "nothing here"
    assert redact("abc", {"empty": ""}) == "abc"
