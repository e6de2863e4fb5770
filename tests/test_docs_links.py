"""Every relative link and `#anchor` in README.md, CONTRIBUTING.md and docs/*.md resolves:
the file it names exists, and its anchor is the slug of a heading there, as GitHub makes
it. A section moved to another file breaks the links to it; this says which."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = (REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md")))

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"`[^`\n]*`")
# [text](target) or ![alt](target); the text may run over a line break.
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # https:, mailto: ... (not checked here)


def _unfenced(text: str) -> list[str]:
    """The lines of `text` with those of fenced code blocks blanked (a `#` there is no
    heading, a `[x](y)` no link); the line count stays, so line numbers stay right."""
    lines: list[str] = []
    fenced = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        lines.append("" if fenced or _FENCE.match(line) else line)
    return lines


def _prose(text: str) -> str:
    """`text` unfenced and with code spans blanked, each to as many spaces."""
    return "\n".join(
        _CODE_SPAN.sub(lambda span: " " * len(span.group()), line) for line in _unfenced(text)
    )


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: lower case, every character but letters,
    digits, `_`, `-` and spaces dropped (markup and punctuation), spaces made `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown text's headings; a repeated one gets -1, -2 ... as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in _unfenced(text):
        heading = _HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    """Each relative link of the Markdown file `path` that does not resolve, with its line."""
    text = path.read_text(encoding="utf-8")
    prose = _prose(text)
    broken: list[str] = []
    for link in _LINK.finditer(prose):
        target = link.group(1)
        if _SCHEME.match(target):
            continue
        where = f"{path.name}:{prose.count(chr(10), 0, link.start()) + 1}: ({target})"
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{where} no such file {linked}")
        elif anchor and (linked.suffix != ".md" or not linked.is_file()):
            broken.append(f"{where} an anchor into {linked.name}, which is not Markdown")
        elif anchor and anchor not in anchors(linked.read_text(encoding="utf-8")):
            broken.append(f"{where} no heading of {linked.name} has the anchor #{anchor}")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(doc: Path) -> None:
    assert broken_links(doc) == []


def test_docs_folder_is_checked() -> None:
    assert any(doc.parent.name == "docs" for doc in DOCS), "docs/*.md found nothing"


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Opt in, opt out, override per pod", "opt-in-opt-out-override-per-pod"),
        ("End-to-end tests: a real kube-apiserver", "end-to-end-tests-a-real-kube-apiserver"),
        ("`DETECT_MODE` and `?gc=1`", "detect_mode-and-gc1"),
        ("Crossing → fetch start", "crossing--fetch-start"),
    ],
)
def test_slugs_are_githubs(heading: str, anchor: str) -> None:
    assert anchors(f"## {heading}\n") == {anchor}


def test_broken_links_are_reported_with_their_lines(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n## Part\n## Part\n", encoding="utf-8")
    (tmp_path / "page.md").write_text(
        "# Page\n"
        "[ok](#page) [ok](other.md) [ok](other.md#part-1) [web](https://example.com/#x)\n"
        "[gone](missing.md)\n"
        "[no such part](other.md#whole)\n"
        "[over a\nline break](#nowhere)\n"
        "```sh\n# not a heading\n[in code](#not-a-heading)\n```\n"
        "`[in a span](#span)` [to a heading in code](#not-a-heading)\n",
        encoding="utf-8",
    )
    broken = broken_links(tmp_path / "page.md")
    assert broken == [
        f"page.md:3: (missing.md) no such file {tmp_path / 'missing.md'}",
        "page.md:4: (other.md#whole) no heading of other.md has the anchor #whole",
        "page.md:5: (#nowhere) no heading of page.md has the anchor #nowhere",
        "page.md:11: (#not-a-heading) no heading of page.md has the anchor #not-a-heading",
    ]
