"""The README's generated tables (testinfra.readme_tables) match their registries."""

from pathlib import Path

import pytest

from testinfra import readme_tables


@pytest.mark.parametrize("name", sorted(readme_tables.TABLES))
def test_each_generated_readme_table_matches_its_registry(name: str) -> None:
    source, generate = readme_tables.TABLES[name]
    text = readme_tables.README.read_text(encoding="utf-8")
    assert readme_tables.block(text, name) == generate(), (
        f"README.md's {name} table drifted from {source}; regenerate it with "
        f"`{readme_tables.REGENERATE}`"
    )


def test_the_rewrite_replaces_only_the_generated_blocks(tmp_path: Path) -> None:
    stale = "".join(
        f"text above {name}\n{readme_tables.begin_marker(name)}\n| old | table |\n"
        f"{readme_tables.end_marker(name)}\ntext below {name}\n"
        for name in readme_tables.TABLES
    )
    readme = tmp_path / "README.md"
    readme.write_text(stale, encoding="utf-8")
    readme_tables.main(readme)
    text = readme.read_text(encoding="utf-8")
    for name, (_, generate) in readme_tables.TABLES.items():
        assert readme_tables.block(text, name) == generate()
        assert f"text above {name}\n" in text and f"text below {name}\n" in text
    assert "| old | table |" not in text
    readme_tables.main(readme)
    assert readme.read_text(encoding="utf-8") == text  # already current: left alone


def test_a_readme_without_the_markers_is_a_clear_error(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="annotations:begin"):
        readme_tables.main(readme)
