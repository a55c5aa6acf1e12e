"""Loading a manifest store: the JSON file and every file it names, as one checked whole.

`load_store` either returns a `LoadedStore` (the models, each named file's text and sha256) or
raises `StoreError` listing every problem with its file and field path. Nothing here writes.

Whatever the input (malformed JSON, wrong types, a path through a symlink, a 10^5-deep array), the
only exception `load_store` raises is `StoreError`. Problems are collected, not stopped at: schema
problems, unknown references and unreadable files of one store are reported together. The steps
live beside this module: `store_json` (parsing), `store_messages` (schema problems in words),
`references` (cross-references), `named_files` (reading the files), `content_check` (what the
files say).
"""

import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from factory.errors import StoreError
from factory.platforms import BY_NAME, BY_SLUG, Platform
from factory.store.manifest import Manifest, ManifestStore
from factory.store.named_files import Reader, StoreFile, named_files, read_named_file
from factory.store.references import StoreView, cross_reference_problems
from factory.store.store_json import fail, parse_store_json
from factory.store.store_messages import pydantic_problems

# A store of 10,000 manifests is about 3 MB; anything far past that is a mistake or an attack.
MAX_STORE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class LoadedStore:
    """A valid manifest store with every file it names."""

    path: Path
    model: ManifestStore
    files: dict[str, StoreFile]
    sha256: str  # of the JSON bytes and every named file: changes when anything in the store does

    @property
    def root(self) -> Path:
        return self.path.parent

    def manifest(self, manifest_id: str) -> Manifest:
        try:
            return self.model.manifests[manifest_id]
        except KeyError:
            known = ", ".join(sorted(self.model.manifests)) or "none"
            msg = f"unknown manifest id {manifest_id!r} in {self.path} (known: {known})"
            raise KeyError(msg) from None

    def template_file(self, name: str) -> StoreFile:
        return self.files[self.model.templates[name].path]

    def module_file(self, name: str, version: str) -> StoreFile:
        return self.files[self.model.modules[name][version].path]

    def suite_file(self, name: str) -> StoreFile:
        return self.files[self.model.test_suites[name].path]

    def combinations(
        self, *, manifest_ids: list[str] | None = None, platforms: list[str] | None = None
    ) -> list[tuple[str, Platform]]:
        """Every (manifest id, platform) the store lists, in a stable order.

        `manifest_ids` and `platforms` (names like `linux/arm64` or slugs like `linux_arm64`)
        filter; None or empty means no filter. Ids or platforms the store does not list select
        nothing.
        """
        wanted_ids = set(manifest_ids) if manifest_ids else None
        wanted_platforms = None
        if platforms:
            wanted_platforms = {BY_SLUG[p].name if p in BY_SLUG else p for p in platforms}
        out = []
        for manifest_id in sorted(self.model.manifests):
            if wanted_ids is not None and manifest_id not in wanted_ids:
                continue
            for name in self.model.manifests[manifest_id].platforms:
                if wanted_platforms is not None and name not in wanted_platforms:
                    continue
                out.append((manifest_id, BY_NAME[name]))
        return out

    def partition_keys(self, platform: Platform) -> list[str]:
        """The manifest ids that list `platform`: the keys of its dynamic partitions."""
        return sorted(
            mid for mid, m in self.model.manifests.items() if platform.name in m.platforms
        )


def _read_store_bytes(path: Path, file: str) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError:
        msg = "no such file (set FACTORY_MANIFEST_STORE or pass --manifest-store)"
        fail(file, msg)
    except OSError as exc:
        fail(file, f"cannot be read: {exc.strerror or exc}")
    if stat.S_ISDIR(st.st_mode):
        msg = "is a directory; give the store's JSON file (e.g. control_plane/data/manifest.json)"
        fail(file, msg)
    if not stat.S_ISREG(st.st_mode):
        fail(file, "is not a regular file")
    if st.st_size > MAX_STORE_BYTES:
        fail(file, f"the store is {st.st_size} bytes; at most {MAX_STORE_BYTES} are read")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_STORE_BYTES + 1)
    except OSError as exc:
        fail(file, f"cannot be read: {exc.strerror or exc}")
    if len(raw) > MAX_STORE_BYTES:
        fail(file, f"the store is over {MAX_STORE_BYTES} bytes; at most {MAX_STORE_BYTES} are read")
    return raw


def load_store(path: Path | str) -> LoadedStore:
    """Read, parse and check a manifest store; raise `StoreError` with every problem found."""
    path = Path(path)
    file = str(path)
    raw = _read_store_bytes(path, file)
    data, problems = parse_store_json(raw, file)

    model: ManifestStore | None = None
    try:
        model = ManifestStore.model_validate(data)
    except ValidationError as exc:
        problems += pydantic_problems(file, exc)
    view = StoreView.of_model(model) if model is not None else StoreView.of_raw(data)
    problems += cross_reference_problems(file, view)

    files: dict[str, StoreFile] = {}
    root = path.parent
    try:
        real_root = root.resolve()
    except (OSError, RuntimeError):
        fail(file, "the store's folder cannot be resolved (a symlink loop?)")
    reader = Reader(total=len(raw))
    for where, rel in named_files(view):
        if rel in files:
            continue
        read, problem = read_named_file(root, real_root, file, where, rel, reader)
        if problem:
            problems.append(problem)
        elif read:
            files[rel] = read
    if problems or model is None:
        raise StoreError(problems)

    digest = hashlib.sha256(raw)
    for rel in sorted(files):
        digest.update(f"\0{rel}\0{files[rel].sha256}".encode())
    loaded = LoadedStore(path=path, model=model, files=files, sha256=digest.hexdigest())
    # What the files say: fragments and templates parsed, every combination rendered (with a
    # placeholder base digest: no registry needed) and its Dockerfile checked.
    from factory.store.content_check import content_problems

    problems = content_problems(loaded)
    if problems:
        raise StoreError(problems)
    return loaded
