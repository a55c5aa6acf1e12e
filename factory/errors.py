"""The exceptions Factory raises, one hierarchy for the CLI, the assets and the sensors.

FactoryError
 +-- StoreError            the manifest store is invalid (carries every problem found)
 +-- ServiceError          a service (Docker Engine, registry, qemu) is missing or not answering
 +-- RegistryError         the OCI registry answered, but not as expected
 +-- InvalidNameError      an id, repository, tag or digest that cannot be used in a name or URL
 +-- UnreadableEntryError  a file or store entry that is not safe or not valid to read
                           (factory.safe_json; skipped and reported by the readers)
 +-- StageError            one stage of one combination failed (render, build, push, test, sbom)
 +-- RecordExistsError     a record for this build_id is already written: records are immutable
 +-- NoExecutorError       no executor here can run this platform (GPU without an NVIDIA runtime)
"""

from dataclasses import dataclass


class FactoryError(Exception):
    """Base of every error Factory reports to a user."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest store: which file, where inside it, and what."""

    file: str
    location: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.location}" if self.location else self.file
        return f"{where}: {self.message}"


class StoreError(FactoryError):
    """The manifest store cannot be used; `problems` lists every problem found."""

    # The message lists at most this many problems (a broken store can have hundreds of
    # thousands); `problems` keeps them all.
    SHOWN = 200

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        count = len(problems)
        lines = "\n".join(f"  - {p}" for p in problems[: self.SHOWN])
        if count > self.SHOWN:
            lines += f"\n  ... and {count - self.SHOWN} more"
        super().__init__(
            f"the manifest store has {count} problem{'s' if count != 1 else ''}:\n{lines}"
        )


class ServiceError(FactoryError):
    """A service Factory needs is missing or does not answer."""


class RegistryError(FactoryError):
    """The registry answered with something Factory cannot use."""


class InvalidNameError(FactoryError, ValueError):
    """An id, repository, tag or digest that does not match its grammar.

    Also a ValueError, so code that checks names with `except ValueError` keeps working.
    """


class StageError(FactoryError):
    """One stage of one manifest x platform combination failed.

    `status` is the record status this failure leads to: `fail` when a test failed, `error` when
    rendering, building or the infrastructure failed.
    """

    def __init__(
        self,
        message: str,
        *,
        stage: str,
        status: str = "error",
        log_tail: str = "",
        transient: bool = False,
    ):
        super().__init__(message)
        self.stage = stage
        self.status = status
        self.log_tail = log_tail
        self.transient = transient


class RecordExistsError(FactoryError):
    """A record is written once; a second write for the same build_id is refused."""


class NoExecutorError(FactoryError):
    """No executor here can run this platform (GPU on a host without an NVIDIA runtime)."""
