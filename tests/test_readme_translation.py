"""README.zh-CN.md carries everything README.md does: the same sections, tables, commands, links
and lesson run times. README.md is the source of truth; each test names what the Chinese one lacks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGLISH, CHINESE = "README.md", "README.zh-CN.md"

FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
LINK_TARGET = re.compile(r"\]\(([^)\s]*)")
UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
LESSON_ROW = re.compile(r"^\| \[`(\d\d_\w+\.ipynb)`\]", re.MULTILINE)
COMMENT = re.compile(r"(^|\s)#.*$")
# The English README's link to the Chinese one may be answered by the Chinese README's link back.
COUNTERPART_LINKS = {CHINESE: ENGLISH}


@dataclass
class Table:
    section: int  # how many "##" headings come before it (0: above the first one)
    rows: list[list[str]]  # every row as its cells, the header and the |---| row included


@dataclass
class Readme:
    headings: list[tuple[int, str]] = field(default_factory=list)  # (level, text) outside code blocks
    tables: list[Table] = field(default_factory=list)
    code: list[tuple[str, list[str]]] = field(default_factory=list)  # (language, lines) of fenced blocks
    links: list[str] = field(default_factory=list)  # every "](target)" outside code blocks


def cells(row: str) -> list[str]:
    """The cells of a Markdown table row, stripped; ``\\|`` inside a cell does not split it."""
    return [cell.strip() for cell in UNESCAPED_PIPE.split(row.strip().strip("|"))]


def parse(text: str) -> Readme:
    """Headings, tables, fenced code blocks and link targets of a Markdown document, in order."""
    readme, fence, section, table = Readme(), None, 0, None
    for line in text.splitlines():
        if fence is not None:  # inside a code block: only its closing fence ends it
            if line.strip().startswith(fence):
                fence = None
            else:
                readme.code[-1][1].append(line)
            continue
        if line.lstrip().startswith("|"):
            if table is None:
                table = Table(section, [])
                readme.tables.append(table)
            table.rows.append(cells(line))
            readme.links += LINK_TARGET.findall(line)
            continue
        table = None
        if match := FENCE.match(line):
            fence = match.group(1)
            readme.code.append((match.group(2), []))
        elif match := HEADING.match(line):
            level = len(match.group(1))
            section += level == 2
            readme.headings.append((level, match.group(2)))
        else:
            readme.links += LINK_TARGET.findall(line)
    return readme


def command_part(language: str, lines: list[str]) -> list[str]:
    """What a code block must share with its translation. A block with a language (``bash``) is
    commands: its lines without ``#`` comments and trailing blanks. A block without one is a text
    diagram such as the layout: the names that start its unindented lines (descriptions are prose)."""
    if language:
        return [COMMENT.sub("", line).rstrip() for line in lines]
    return [line.split()[0] for line in lines if line.strip() and not line[0].isspace()]


def compare_headings(english: Readme, chinese: Readme) -> list[str]:
    """Problems with the heading structure: the count per level, then the sequence of levels."""
    problems = []
    for level in sorted({level for level, _ in english.headings + chinese.headings}):
        en = [text for lvl, text in english.headings if lvl == level]
        zh = [text for lvl, text in chinese.headings if lvl == level]
        if len(en) != len(zh):
            problems.append(f"{'#' * level} headings: {ENGLISH} has {len(en)} {en}, {CHINESE} has {len(zh)} {zh}")
    en_levels = [level for level, _ in english.headings]
    zh_levels = [level for level, _ in chinese.headings]
    if en_levels != zh_levels:
        at = next((i for i, pair in enumerate(zip(en_levels, zh_levels)) if pair[0] != pair[1]),
                  min(len(en_levels), len(zh_levels)))
        where = english.headings[at][1] if at < len(english.headings) else "the end"
        problems.append(f"heading levels differ from heading {at + 1} ({ENGLISH}: {where!r}): "
                        f"{en_levels} vs {zh_levels}")
    return problems


def compare_tables(english: Readme, chinese: Readme) -> list[str]:
    """Problems with the tables: their number and sections, then each one's rows, columns and
    first-column cells below the header (the header itself is translated)."""
    en_sections = [table.section for table in english.tables]
    zh_sections = [table.section for table in chinese.tables]
    if en_sections != zh_sections:
        return [f"tables by '##' section: {ENGLISH} {en_sections}, {CHINESE} {zh_sections}"]
    problems = []
    for number, (en, zh) in enumerate(zip(english.tables, chinese.tables), start=1):
        name = f"table {number} (section {en.section}, first column {en.rows[0][0]!r})"
        if len(en.rows) != len(zh.rows):
            problems.append(f"{name}: {len(en.rows)} rows in {ENGLISH}, {len(zh.rows)} in {CHINESE}")
        width = len(en.rows[0])
        ragged = [row[0] for row in zh.rows if len(row) != width]
        if ragged:
            problems.append(f"{name}: rows of {CHINESE} without {width} columns: {ragged}")
        en_first = [row[0] for row in en.rows[2:]]
        zh_first = [row[0] for row in zh.rows[2:]]
        if en_first != zh_first:
            problems.append(f"{name}: first-column cells differ; only in {ENGLISH}: "
                            f"{[c for c in en_first if c not in zh_first]}, only in {CHINESE}: "
                            f"{[c for c in zh_first if c not in en_first]}, order {en_first} vs {zh_first}")
    return problems


def compare_code(english: Readme, chinese: Readme) -> list[str]:
    """Problems with the fenced code blocks: their number, languages and command parts."""
    if len(english.code) != len(chinese.code):
        return [f"{len(english.code)} code blocks in {ENGLISH}, {len(chinese.code)} in {CHINESE}"]
    problems = []
    for number, ((en_lang, en_lines), (zh_lang, zh_lines)) in enumerate(zip(english.code, chinese.code), 1):
        en, zh = command_part(en_lang, en_lines), command_part(zh_lang, zh_lines)
        if en_lang != zh_lang or en != zh:
            problems.append(f"code block {number}: {ENGLISH} ```{en_lang} {en} vs {CHINESE} ```{zh_lang} {zh}")
    return problems


def compare_links(english: Readme, chinese: Readme) -> list[str]:
    """Link targets of the English README that the Chinese one lacks."""
    missing = [target for target in dict.fromkeys(english.links)
               if target not in chinese.links and COUNTERPART_LINKS.get(target) not in chinese.links]
    return [f"{CHINESE} lacks links to {missing}"] if missing else []


def lesson_cells(text: str, name: str) -> list[str]:
    """The run-time cells of notebook ``name``'s lesson rows, found as ``helpers.runtimes`` finds
    them when it rewrites the READMEs (one row on one line, the run time in its last cell)."""
    row = re.compile(rf"^(\| \[`{re.escape(name)}`\].*\| )([^|]*)( \|)$", re.MULTILINE)
    return [match.group(2) for match in row.finditer(text)]


def compare_run_times(english_text: str, chinese_text: str) -> list[str]:
    """Lesson rows whose run-time cell differs, or that ``helpers.runtimes`` could not rewrite."""
    problems = []
    for name in dict.fromkeys(LESSON_ROW.findall(english_text)):
        en, zh = lesson_cells(english_text, name), lesson_cells(chinese_text, name)
        if len(zh) != 1 or zh != en:
            problems.append(f"{name}: run time {en} in {ENGLISH}, {zh} in {CHINESE} (one row on one line, "
                            "ending ' | <run time> |')")
    return problems


COMPARISONS = {"headings": compare_headings, "tables": compare_tables, "code": compare_code,
               "links": compare_links}


@pytest.fixture(scope="module")
def texts() -> tuple[str, str]:
    return (ROOT / ENGLISH).read_text(encoding="utf-8"), (ROOT / CHINESE).read_text(encoding="utf-8")


@pytest.mark.parametrize("what", COMPARISONS)
def test_chinese_readme_matches_the_english_one(texts, what):
    english, chinese = (parse(text) for text in texts)
    problems = COMPARISONS[what](english, chinese)
    assert not problems, f"{CHINESE} is out of step with {ENGLISH}:\n" + "\n".join(problems)


def test_lesson_run_times_are_the_same(texts):
    assert LESSON_ROW.search(texts[0]), f"no lesson rows found in {ENGLISH}"
    problems = compare_run_times(*texts)
    assert not problems, "\n".join(problems)


def test_the_english_readme_has_what_the_checks_compare(texts):
    english = parse(texts[0])
    assert [level for level, _ in english.headings].count(2) >= 2
    assert english.tables and english.code and english.links


MUTATIONS = {  # a change to the English README, and the comparison that must report it
    "a table row removed": (lambda t: re.sub(r"^\| \[`\d\d_.*\n", "", t, count=1, flags=re.MULTILINE), "tables"),
    "a '##' heading removed": (lambda t: re.sub(r"^## .*\n", "", t, count=1, flags=re.MULTILINE), "headings"),
    "a heading demoted to '###'": (lambda t: re.sub(r"^## ", "### ", t, count=1, flags=re.MULTILINE), "headings"),
    "a command changed": (lambda t: re.sub(r"(```bash\n)(\S+)", r"\1\2x", t, count=1), "code"),
    "a link removed": (lambda t: re.sub(r"\]\((notebooks/[^)]+|[A-Z]+\.md)\)", "]()", t, count=1), "links"),
    "a first-column cell changed": (lambda t: t.replace("| `COURSE_DATA_DIR` |", "| `COURSE_DATA_PATH` |"),
                                    "tables"),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_the_comparison_reports_a_difference(texts, mutation):
    change, what = MUTATIONS[mutation]
    english = texts[0]
    changed = change(english)
    assert changed != english, f"the mutation '{mutation}' no longer applies to {ENGLISH}"
    assert not COMPARISONS[what](parse(english), parse(english)), "a README must match itself"
    assert COMPARISONS[what](parse(english), parse(changed)), f"'{mutation}' went unreported"


def test_the_comparison_ignores_translated_comments_and_prose(texts):
    english = texts[0]
    translated = re.sub(r"(```bash\n(?:.*\n)*?```)",
                        lambda m: re.sub(r"#.*", "# 注释", m.group(1)), english)
    translated = re.sub(r"^## (.*)$", r"## 译：\1", translated, flags=re.MULTILINE)
    assert translated != english
    for what, compare in COMPARISONS.items():
        assert not compare(parse(english), parse(translated)), what


def test_run_time_comparison_reports_a_changed_or_split_row(texts):
    english = texts[0]
    name = LESSON_ROW.search(english).group(1)
    cell = lesson_cells(english, name)[0]
    row = re.compile(rf"^(\| \[`{re.escape(name)}`\].*\| )[^|]*( \|)$", re.MULTILINE)
    changed = row.sub(lambda m: m.group(1) + "~99 min (~9 min fast)" + m.group(2), english, count=1)
    split = row.sub(lambda m: m.group(1) + "\n" + cell + m.group(2), english, count=1)
    assert not compare_run_times(english, english)
    assert compare_run_times(english, changed) and compare_run_times(english, split)
