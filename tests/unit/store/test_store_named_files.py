"""`load_store` on the files a store names (templates, module fragments, test suites): paths
that leave the store's folder, symlinks, missing files, directories and other non-files, text
that is not UTF-8, files over the size limit and files that cannot be read."""

import json
import os
from pathlib import Path

import pytest

from factory.store.named_files import MAX_FILE_BYTES
from tests.unit.store.store_problems import assert_one, setter
from tests.unit.store_factory import write_store


def _outside_file(tmp_path: Path) -> Path:
    outside = tmp_path / "outside.j2"
    outside.write_text("FROM scratch\n")
    return outside


def case_dotdot(tmp_path, root):
    _outside_file(tmp_path)
    return "../outside.j2", "leaves the store's folder with '..'"


def case_deep_dotdot(tmp_path, root):
    _outside_file(tmp_path)
    return "templates/../../outside.j2", "leaves the store's folder with '..'"


def case_dotdot_missing(tmp_path, root):
    return "../../../../etc/passwd", "leaves the store's folder with '..'"


def case_absolute(tmp_path, root):
    return str(_outside_file(tmp_path)), "is absolute; paths are relative to the store's folder"


def case_absolute_inside(tmp_path, root):
    return str(root / "templates/service.Dockerfile.j2"), "is absolute"


def case_file_symlink_out(tmp_path, root):
    (root / "templates/evil.j2").symlink_to(_outside_file(tmp_path))
    return "templates/evil.j2", "leaves the store's folder through a symlink"


def case_relative_file_symlink_out(tmp_path, root):
    _outside_file(tmp_path)
    (root / "templates/evil.j2").symlink_to("../../outside.j2")
    return "templates/evil.j2", "leaves the store's folder through a symlink"


def case_dir_symlink_out(tmp_path, root):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "x.j2").write_text("FROM scratch\n")
    (root / "shared").symlink_to(shared, target_is_directory=True)
    return "shared/x.j2", "leaves the store's folder through a symlink"


def case_symlink_to_etc(tmp_path, root):
    (root / "etc").symlink_to("/etc", target_is_directory=True)
    return "etc/passwd", "leaves the store's folder through a symlink"


def case_symlink_loop(tmp_path, root):
    (root / "templates/loop1.j2").symlink_to("loop2.j2")
    (root / "templates/loop2.j2").symlink_to("loop1.j2")
    return "templates/loop1.j2", "symlink loop"


def case_self_symlink(tmp_path, root):
    (root / "templates/self.j2").symlink_to("self.j2")
    return "templates/self.j2", "symlink loop"


def case_dangling_symlink(tmp_path, root):
    (root / "templates/dangling.j2").symlink_to("gone.j2")
    return "templates/dangling.j2", "is a symlink to a file that does not exist"


def case_missing(tmp_path, root):
    return "templates/missing.j2", f'no such file "templates/missing.j2" in {root}'


def case_missing_folder(tmp_path, root):
    return "nowhere/missing.j2", 'no such file "nowhere/missing.j2"'


def case_directory(tmp_path, root):
    return "templates", '"templates" is a directory, not a file'


def case_dot(tmp_path, root):
    return ".", '"." is a directory, not a file'


def case_file_as_folder(tmp_path, root):
    return "templates/service.Dockerfile.j2/x", "a part of the path is a file, not a folder"


def case_backslash(tmp_path, root):
    return "templates\\service.Dockerfile.j2", "separate folders with '/'"


def case_fifo(tmp_path, root):
    os.mkfifo(root / "templates/fifo.j2")
    return "templates/fifo.j2", "is not a regular file"


def case_not_utf8(tmp_path, root):
    (root / "templates/latin1.j2").write_bytes(b"FROM x\n# caf\xe9\n")
    return "templates/latin1.j2", "is not valid UTF-8 (byte 0xe9 at offset 12, line 2 column 6)"


def case_too_big(tmp_path, root):
    (root / "templates/big.j2").write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    return "templates/big.j2", f"is {MAX_FILE_BYTES + 1} bytes; files the store names may be at"


def case_name_too_long(tmp_path, root):
    return "templates/" + "x" * 300, "cannot be resolved"


PATH_CASES = [
    case_dotdot,
    case_deep_dotdot,
    case_dotdot_missing,
    case_absolute,
    case_absolute_inside,
    case_file_symlink_out,
    case_relative_file_symlink_out,
    case_dir_symlink_out,
    case_symlink_to_etc,
    case_symlink_loop,
    case_self_symlink,
    case_dangling_symlink,
    case_missing,
    case_missing_folder,
    case_directory,
    case_dot,
    case_file_as_folder,
    case_backslash,
    case_fifo,
    case_not_utf8,
    case_too_big,
    case_name_too_long,
]


@pytest.mark.parametrize("case", PATH_CASES, ids=lambda c: c.__name__.removeprefix("case_"))
def test_named_file_problems(tmp_path, case):
    path = write_store(tmp_path)
    rel, message = case(tmp_path, path.parent)
    mutate = setter("templates", "service", "path", value=rel)
    path = write_store(tmp_path, mutate)
    assert_one(path, "templates.service.path", json.dumps(rel), message)


@pytest.mark.parametrize(
    ("mutate", "location"),
    [
        (
            setter("modules", "core", "0.2.0", "path", value="modules/core/9.9.9.Dockerfile"),
            "modules.core.0.2.0.path",
        ),
        (setter("test_suites", "http", "path", value="tests/none.sh"), "test_suites.http.path"),
    ],
)
def test_named_file_locations(tmp_path, mutate, location):
    assert_one(write_store(tmp_path, mutate), location, "no such file")


def test_named_file_deleted(tmp_path):
    path = write_store(tmp_path)
    (path.parent / "tests/smoke.sh").unlink()
    assert_one(path, "test_suites.smoke.path", 'no such file "tests/smoke.sh"')


def test_named_file_unreadable(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = write_store(tmp_path)
    target = path.parent / "tests/smoke.sh"
    target.chmod(0)
    try:
        assert_one(path, "test_suites.smoke.path", "cannot be read: Permission denied")
    finally:
        target.chmod(0o644)
