"""A fork-server preload that holds the server until a gate file exists (its path in
FACTORY_TEST_PRELOAD_GATE), as the code location's import holds it for a second or more."""

import os
import time
from pathlib import Path

_gate = os.environ.get("FACTORY_TEST_PRELOAD_GATE")
if _gate:
    _deadline = time.monotonic() + 60
    while not Path(_gate).exists() and time.monotonic() < _deadline:
        time.sleep(0.05)
