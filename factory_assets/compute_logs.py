"""The compute log manager of `factory run`'s workers: a step's stdout and stderr go to the same
files as with Dagster's LocalComputeLogManager, and nowhere else.

Dagster's manager also echoes each captured stream back to the process's own output, with a
`tail -F` and a Python `watch_orphans` process per stream: four processes per run. `factory run`
prints its own one line per combination, so the echo only repeated a step's warnings once per
build (and on Ctrl-C each watcher printed a KeyboardInterrupt traceback). The files are what the
UI shows, and they are written here exactly as there: same paths, same completion marker.
"""

import sys
from collections.abc import Generator, Sequence
from contextlib import contextmanager

from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.instance.ref import compute_logs_directory
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import (
    IO_TYPE_EXTENSION,
    LocalComputeLogManager,
)
from dagster._utils import ensure_file, touch_file


class FileCapturedComputeLogManager(LocalComputeLogManager):
    """LocalComputeLogManager's capture without the echo to the process's output."""

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> "FileCapturedComputeLogManager":
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Generator[CapturedLogContext, None, None]:
        out = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        err = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        ensure_file(out)
        ensure_file(err)
        # File-descriptor redirection: a child process's output (the Docker CLI's) is captured too.
        with redirect_to_file(sys.stdout, out), redirect_to_file(sys.stderr, err):
            yield CapturedLogContext(log_key)
        # The marker the UI reads as "this capture is complete", as Dagster's manager leaves it.
        touch_file(self.complete_artifact_path(log_key))


def file_captured_overrides(home: str) -> dict:
    """Instance overrides that capture compute logs under `home` as Dagster's default manager
    does, with the class above (for `InstanceRef.from_dir(home, overrides=...)`)."""
    return {
        "compute_logs": {
            "module": __name__,
            "class": FileCapturedComputeLogManager.__name__,
            "config": {"base_dir": compute_logs_directory(home)},
        }
    }
