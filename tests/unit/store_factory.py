"""A small valid manifest store for tests, written into a tmp_path.

    path = write_store(tmp_path)                      # <tmp_path>/store/manifest.json
    path = write_store(tmp_path, mutate=lambda d: d["manifests"]["web"].update(priority="high"))

The store lives in `<tmp_path>/store/`, so a test can put files *outside* the store's folder in
`tmp_path` itself (symlink and '..' tests). `mutate` gets the store dict before it is written; it
may change it in place, or return a replacement (any JSON value, e.g. a list for "top level is a
list"). The named files are always written as in `FILES`, whatever `mutate` does.
"""

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

STORE_DIR = "store"
STORE_FILE = "manifest.json"

TEMPLATE = """\
# Rendered by Factory for {{ manifest_id }} on {{ platform }}.
FROM {{ base }}
{% for name, snippet in fragments.items() %}
# fragment: {{ name }}
{{ snippet }}
{%- endfor %}
{% for key, value in labels.items() -%}
LABEL {{ key }}="{{ value }}"
{% endfor -%}
CMD ["/bin/sh"]
"""

FILES: dict[str, str] = {
    "templates/service.Dockerfile.j2": TEMPLATE,
    "modules/security/0.1.0.Dockerfile": "RUN echo 'app:x:10001:10001::/home/app:/bin/sh' "
    ">> /etc/passwd\n",
    "modules/core/0.1.0.Dockerfile": "RUN mkdir -p /opt/factory/bin && "
    "printf 'FACTORY_CORE_VERSION=0.1.0\\n' > /etc/factory-release\n",
    "modules/core/0.2.0.Dockerfile": "RUN mkdir -p /opt/factory/bin && "
    "printf 'FACTORY_CORE_VERSION=0.2.0\\n' > /etc/factory-release\n",
    "modules/light/0.1.0.Dockerfile": "ENV FACTORY_PROFILE=light\n",
    "tests/smoke.sh": '#!/bin/sh\nset -eu\ntest -f /etc/factory-release\necho "smoke ok"\n',
    "tests/http.sh": "#!/bin/sh\nset -eu\necho 'http ok'\n",
}


def valid_store_dict() -> dict[str, Any]:
    """A fresh (deep-copied) valid store: two bases, two manifests, every field used."""
    return copy.deepcopy(
        {
            "schema_version": 1,
            "bases": {
                "busybox": {
                    "image": "127.0.0.1:5000/factory/base/busybox",
                    "tag": "1.35",
                    "platforms": ["linux/amd64", "linux/arm64"],
                },
                "amd64only": {
                    "image": "127.0.0.1:5000/factory/base/amd64only",
                    "tag": "1.0",
                    "platforms": ["linux/amd64"],
                },
            },
            "templates": {
                "service": {"version": "0.1.0", "path": "templates/service.Dockerfile.j2"}
            },
            "modules": {
                "security": {"0.1.0": {"path": "modules/security/0.1.0.Dockerfile"}},
                "core": {
                    "0.1.0": {"path": "modules/core/0.1.0.Dockerfile"},
                    "0.2.0": {"path": "modules/core/0.2.0.Dockerfile"},
                },
                "light": {"0.1.0": {"path": "modules/light/0.1.0.Dockerfile"}},
            },
            "test_suites": {
                "smoke": {"path": "tests/smoke.sh", "timeout_s": 60},
                "http": {"path": "tests/http.sh", "timeout_s": 30},
            },
            "manifests": {
                "llm_factory": {
                    "template": "service",
                    "base": "busybox",
                    "fragments": {"security": "0.1.0", "core": "0.1.0", "light": "0.1.0"},
                    "platforms": ["linux/amd64", "linux/arm64", "linux/amd64+gpu"],
                    "tests": ["smoke"],
                    "priority": "normal",
                },
                "web": {
                    "template": "service",
                    "base": "amd64only",
                    "fragments": {"security": "0.1.0", "core": "0.2.0"},
                    "platforms": ["linux/amd64"],
                    "tests": ["smoke", "http"],
                    "priority": "high",
                },
            },
        }
    )


def write_store(tmp_path: Path, mutate: Callable[[dict[str, Any]], Any] | None = None) -> Path:
    """Write the store (after `mutate`) and its files under `tmp_path`; return the JSON's path."""
    root = Path(tmp_path) / STORE_DIR
    for rel, text in FILES.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    data: Any = valid_store_dict()
    if mutate is not None:
        replaced = mutate(data)
        if replaced is not None:
            data = replaced
    path = root / STORE_FILE
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path
