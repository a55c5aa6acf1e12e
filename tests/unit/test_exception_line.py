"""One line of an error from a library, as a user-facing message shows it."""

from factory.safe_json import exception_line


def test_the_first_line_only():
    assert exception_line(ValueError("first\nsecond\nthird")) == "first"


def test_blank_lines_around_it_are_skipped():
    assert exception_line(ValueError("\n\n  first  \nsecond")) == "first"


def test_control_characters_are_shown_not_obeyed():
    line = exception_line(ValueError("clear \x1b[2J screen"))
    assert "\x1b" not in line
    assert line.startswith("clear ") and line.endswith(" screen")


def test_cut_to_the_limit():
    assert exception_line(ValueError("x" * 500), limit=10) == "x" * 10 + "..."


def test_no_message_is_an_empty_line():
    assert exception_line(KeyboardInterrupt()) == ""
