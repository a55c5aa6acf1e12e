"""Which Dockerfile step hit the cache, read from BuildKit's plain progress output.

`engine.count_build_steps` gives the totals a record stores, from these steps; prewarm and the
benchmarks need to know *which* steps were cached (the stable security/core RUN steps, not the
per-manifest ones), so steps are matched to Dockerfile instructions by their normalized text.
"""

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class BuildStep:
    """One `[index/total]` step of a build: its normalized instruction and whether it was cached."""

    index: int
    total: int
    instruction: str
    cached: bool

    @property
    def keyword(self) -> str:
        return self.instruction.split(" ", 1)[0].upper()


# BuildKit's plain progress lines: a step header, a cache hit, a cache import.
_STEP_RE = re.compile(r"^#(\d+) \[(?:[^\]]*? )?(\d+)/(\d+)\] (.*)$")
_CACHED_RE = re.compile(r"^#(\d+) CACHED\s*$")
_IMPORT_RE = re.compile(r"^#\d+ importing cache manifest from (\S+)\s*$")
_CONTINUATION_RE = re.compile(r"\\\n")
_SPACE_RE = re.compile(r"\s+")


def normalize_instruction(text: str) -> str:
    """One line, single spaces: how an instruction compares between a Dockerfile and a log."""
    return _SPACE_RE.sub(" ", _CONTINUATION_RE.sub("", text)).strip()


def dockerfile_instructions(text: str) -> list[str]:
    """The instructions of a Dockerfile (or fragment), normalized, without comments.

    BuildKit drops comment lines, also inside a continued instruction, and joins continuation
    lines; so does this.
    """
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = _CONTINUATION_RE.sub("", "\n".join(lines))
    return [normalize_instruction(line) for line in joined.splitlines() if line.strip()]


def build_steps(log: str) -> list[BuildStep]:
    """The `[i/n]` steps of a BuildKit plain-progress log, in index order."""
    found: dict[str, tuple[int, int, str]] = {}
    cached: set[str] = set()
    for line in log.splitlines():
        if m := _STEP_RE.match(line):
            found.setdefault(m.group(1), (int(m.group(2)), int(m.group(3)), m.group(4)))
        elif m := _CACHED_RE.match(line):
            cached.add(m.group(1))
    steps = [
        BuildStep(index=i, total=n, instruction=normalize_instruction(text), cached=vid in cached)
        for vid, (i, n, text) in found.items()
    ]
    return sorted(steps, key=lambda s: s.index)


def cache_imports(log: str) -> list[str]:
    """The cache refs a build imported (`--cache-from`), in the order BuildKit reports them."""
    return [m.group(1) for line in log.splitlines() if (m := _IMPORT_RE.match(line))]


def run_steps(log: str) -> list[BuildStep]:
    """The RUN steps only: the ones that do work and make layers worth caching."""
    return [s for s in build_steps(log) if s.keyword == "RUN"]


def matching_steps(log: str, snippets: list[str]) -> list[BuildStep]:
    """The RUN steps whose instruction is one of the RUN instructions in `snippets`.

    Used to pick the stable layers (the security and core fragments) out of a whole build.
    """
    wanted = {
        instruction
        for snippet in snippets
        for instruction in dockerfile_instructions(snippet)
        if instruction.upper().startswith("RUN ")
    }
    return [s for s in run_steps(log) if s.instruction in wanted]
