"""The README stays true: its configuration table is the one the code declares."""

from pathlib import Path

from app.settings import markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def test_configuration_table_matches_the_settings():
    text = README.read_text()
    table = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert table == markdown_table(), "regenerate with: python -m app.settings"


def test_the_two_commands_come_first():
    text = README.read_text()
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert first_block.strip().splitlines()[0].startswith("make run")
    assert first_block.strip().splitlines()[1].startswith("make test")


def test_ci_runs_the_readme_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_no_merge_conflict_is_left_in_the_repository_text():
    """A merge that left its markers in prose or code would still pass every other test."""
    markers = ("<" * 7 + " ", "=" * 7 + "\n", ">" * 7 + " ")
    root = README.parent
    for path in [README, *root.glob("app/**/*.py"), *root.glob("workers/*.py"), *root.glob("bench/*.md"),
                 *root.glob("tests/**/*.py"), root / "Makefile", root / "requirements.txt"]:
        text = path.read_text(encoding="utf-8")
        assert not any(line.startswith(markers) for line in text.splitlines(keepends=True)), path
