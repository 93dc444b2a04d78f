"""The course as a static HTML book, built from the committed notebooks and their outputs.

Command line (from the project root; ``make site`` runs the first form)::

    python -m helpers.site                   # HTML in build/site/; open build/site/index.html
    python -m helpers.site --out /tmp/site   # anywhere else

:func:`write_source` lays out a Sphinx source tree beside the output folder (``build/site-source``):
the README as the landing page, every lesson of ``notebooks/`` and every solution of ``solutions/``
in name order, and the markdown pages the README links to, at the same relative paths as in the
repository so that their links work unchanged. :func:`build` runs Sphinx on it with MyST-NB
(notebooks rendered from their committed outputs, never executed) and the book theme (navigation,
search). Nothing is downloaded at build or at view time:

* maths is converted to MathML while building (``latex2mathml``), which browsers render natively,
  instead of MathJax, which Sphinx loads from a CDN;
* a control panel (an ipywidgets output) needs a kernel, so it is shown as a note saying where it runs,
  and the notebook's saved widget state (and the widget scripts a CDN would serve) are left out.
"""

from __future__ import annotations

import argparse
import html
import posixpath
import re
import shutil
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import nbformat

from helpers.paths import course_root

PAGES = ("TEACHING.md", "GLOSSARY.md", "README.zh-CN.md", "data/README.md")  # linked from the README
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PANEL_NOTE = "Run this notebook in JupyterLab (<code>make lab</code>) to use it.{controls}"
LINK = re.compile(r"(\]\()([^)\s]+)(\))")  # a markdown link's target
MATHS = re.compile(r"\$\$.+?\$\$|\$[^$\s](?:[^$\n]*[^$\s])?\$", re.DOTALL)  # what MyST's dollarmath reads as maths
MATHVARIANT_START = {  # code point of "A" in Unicode's mathematical alphanumerics; "a" follows 26 later
    "bold": 0x1D400, "italic": 0x1D434, "bold-italic": 0x1D468, "script": 0x1D49C,
    "double-struck": 0x1D538, "fraktur": 0x1D504, "sans-serif": 0x1D5A0, "monospace": 0x1D670,
}
LETTERLIKE = {  # letters Unicode keeps outside those blocks (the holes in them)
    ("script", "B"): "ℬ", ("script", "E"): "ℰ", ("script", "F"): "ℱ", ("script", "H"): "ℋ",
    ("script", "I"): "ℐ", ("script", "L"): "ℒ", ("script", "M"): "ℳ", ("script", "R"): "ℛ",
    ("script", "e"): "ℯ", ("script", "g"): "ℊ", ("script", "o"): "ℴ", ("italic", "h"): "ℎ",
    ("double-struck", "C"): "ℂ", ("double-struck", "H"): "ℍ", ("double-struck", "N"): "ℕ",
    ("double-struck", "P"): "ℙ", ("double-struck", "Q"): "ℚ", ("double-struck", "R"): "ℝ",
    ("double-struck", "Z"): "ℤ", ("fraktur", "C"): "ℭ", ("fraktur", "H"): "ℌ", ("fraktur", "I"): "ℑ",
    ("fraktur", "R"): "ℜ", ("fraktur", "Z"): "ℨ",
}
CSS = """/* helpers/site.py: MathML in the theme's text size, with the reader's maths font where there is one.
   (Not the class "math": the theme lays that out for MathJax.) */
.mathml math { font-family: "STIX Two Math", "Latin Modern Math", "Cambria Math", math; font-size: 1.15em; }
div.mathml { overflow-x: auto; margin: 0.8em 0; }
"""
MATHML = "http://www.w3.org/1998/Math/MathML"
FUNCTIONS = {"exp", "log", "ln", "lg", "sin", "cos", "tan", "det", "dim", "arg", "deg", "Pr"}  # \\exp etc., as <mi>
BRACKETS = set("()[]{}|‖∣⌈⌉⌊⌋⟨⟩")
ROWS = {"math", "mrow", "mstyle", "msqrt", "mtd", "mpadded"}  # elements whose children are read in a row
ElementTree.register_namespace("", MATHML)


def lessons(root: Path | None = None) -> list[Path]:
    """The lesson notebooks, ``notebooks/*.ipynb`` in name order (= teaching order)."""
    return sorted(((root or course_root()) / "notebooks").glob("*.ipynb"))


def solutions(root: Path | None = None) -> list[Path]:
    """The worked solutions, ``solutions/*.ipynb`` in name order."""
    return sorted(((root or course_root()) / "solutions").glob("*.ipynb"))


# ---------------------------------------------------------------- maths as MathML


def styled_letters(variant: str, text: str) -> str:
    """``text`` in Unicode's mathematical letters of ``variant`` (``"bold"``, ``"double-struck"``…).

    Browsers render MathML Core, where ``mathvariant`` means nothing but ``normal``: \\mathbf p and
    \\mathbb R have to be the characters 𝐩 and ℝ themselves. Digits and other characters are kept.
    """
    start = MATHVARIANT_START.get(variant)
    if start is None:
        return text
    out = []
    for char in text:
        if (variant, char) in LETTERLIKE:
            out.append(LETTERLIKE[(variant, char)])
        elif "A" <= char <= "Z":
            out.append(chr(start + ord(char) - ord("A")))
        elif "a" <= char <= "z":
            out.append(chr(start + 26 + ord(char) - ord("a")))
        else:
            out.append(char)
    return "".join(out)


def _local(element: ElementTree.Element) -> str:
    return element.tag.removeprefix(f"{{{MATHML}}}")


def _is_function(element: ElementTree.Element) -> bool:
    """Whether ``element`` is a function name (\\exp), maybe with scripts (\\log_2)."""
    if _local(element) in ("msub", "msup", "msubsup") and len(element):
        element = element[0]
    return _local(element) == "mi" and element.text in FUNCTIONS


def core_mathml(element: ElementTree.Element) -> None:
    """Make the MathML tree ``element`` (from latex2mathml) read in MathML Core, in place.

    Styled tokens (\\mathbf, \\mathbb, \\mathcal) get :func:`styled_letters`; a bracket that TeX keeps at
    its size (all but \\left, \\right, \\bigl…: those say ``stretchy``) is told not to stretch; a function
    name such as \\exp or \\log gets TeX's thin space before what it applies to, unless that is a bracket.
    """
    for parent in list(element.iter()):
        children = list(parent)
        for child, after in zip(children, children[1:] + [None]):
            variant = child.get("mathvariant")
            if _local(child) in ("mi", "mn", "mo", "mtext") and variant not in (None, "normal"):
                child.text = styled_letters(variant, child.text or "")
                child.set("mathvariant", "normal")  # one styled letter must not be slanted again
            if _local(child) == "mo" and child.text in BRACKETS and child.get("stretchy") is None:
                child.set("stretchy", "false")
            if after is not None and _local(parent) in ROWS and _is_function(child):
                leading = next((e.text for e in after.iter() if e.text and e.text.strip()), "")
                if leading[:1] not in BRACKETS:
                    thin_space = ElementTree.Element(f"{{{MATHML}}}mspace", width="0.1667em")
                    parent.insert(list(parent).index(child) + 1, thin_space)


def mathml(latex: str, display: bool) -> str:
    """``latex`` (the text between ``$…$`` or ``$$…$$``) as one ``<math>`` element (MathML Core)."""
    from latex2mathml.converter import convert

    element = ElementTree.fromstring(convert(latex.strip(), display="block" if display else "inline"))
    core_mathml(element)
    return ElementTree.tostring(element, encoding="unicode")


def _visit_math(self, node) -> None:
    from docutils import nodes

    self.body.append(self.starttag(node, "span", "", CLASS="mathml notranslate") + mathml(node.astext(), False)
                     + "</span>")
    raise nodes.SkipNode


def _visit_math_block(self, node) -> None:
    from docutils import nodes

    self.body.append(self.starttag(node, "div", CLASS="mathml notranslate") + mathml(node.astext(), True) + "</div>\n")
    raise nodes.SkipNode


def setup(app):
    """Sphinx extension: the ``mathml`` HTML maths renderer (``html_math_renderer = "mathml"``)."""
    app.add_html_math_renderer("mathml", (_visit_math, None), (_visit_math_block, None))
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def has_maths(text: str) -> bool:
    """Whether markdown ``text`` holds a formula (``$…$`` or ``$$…$$``) outside code."""
    prose = re.sub(r"```.*?```|`[^`\n]*`", "", text, flags=re.DOTALL)
    return bool(MATHS.search(prose))


# ---------------------------------------------------------------- the source tree


def panel_controls(state: dict, model_id: str) -> list[str]:
    """The labels of the controls of the widget ``model_id``, from a notebook's saved widget state."""
    model = state.get(model_id, {}).get("state", {})
    labels = [model["description"]] if model.get("description") else []
    for child in model.get("children", []):
        labels += panel_controls(state, child.removeprefix("IPY_MODEL_"))
    return labels


def panel_note(state: dict, model_id: str) -> str:
    """The HTML note shown instead of control panel ``model_id`` (which needs a running kernel)."""
    labels = panel_controls(state, model_id)
    controls = f" Its controls: {html.escape(', '.join(labels))}." if labels else ""
    return (f'<div class="admonition note control-panel"><p class="admonition-title">Control panel</p>'
            f"<p>{PANEL_NOTE.format(controls=controls)}</p></div>")


def static_notebook(notebook: nbformat.NotebookNode, solution: str | None = None) -> nbformat.NotebookNode:
    """``notebook`` as the site shows it: each control panel replaced by :func:`panel_note`, the saved
    widget state dropped and, if ``solution`` (a relative link) is given, a closing link to it."""
    state = notebook.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is not None:
                output["data"] = {"text/html": panel_note(state, view.get("model_id", ""))}
    if solution:
        closing = f"**Worked solutions** of its exercises: [](<{solution}>)."  # an empty link text shows the title
        notebook.cells.append(nbformat.v4.new_markdown_cell(closing))
    return notebook


def relink(text: str, page: str, renamed: dict[str, str]) -> str:
    """``text`` of the page at repository path ``page`` with each relative link to a key of ``renamed``
    (a repository path: ``README.md``, ``solutions``) pointed at its value (its path in the site)."""
    def target(match: re.Match) -> str:
        link, _, anchor = match.group(2).partition("#")
        if re.match(r"[a-z]+:", link) or not link:
            return match.group(0)
        where = posixpath.normpath(posixpath.join(posixpath.dirname(page), link))
        if where not in renamed:
            return match.group(0)
        new = posixpath.relpath(renamed[where], posixpath.dirname(page) or ".")
        return match.group(1) + new + ("#" + anchor if anchor else "") + match.group(3)

    return LINK.sub(target, text)


def toctree(caption: str, entries: list[str]) -> str:
    """A hidden MyST toctree of ``entries`` (document names) under ``caption`` in the sidebar."""
    return "\n```{toctree}\n:hidden:\n:caption: " + caption + "\n\n" + "\n".join(entries) + "\n```\n"


def conf_py(title: str) -> str:
    """The source tree's ``conf.py``: MyST-NB without execution, the book theme, maths as MathML."""
    settings = {
        "project": title,
        "extensions": ["myst_nb", "helpers.site"],
        "root_doc": "index",
        "exclude_patterns": ["_doctrees"],
        "myst_enable_extensions": ["dollarmath"],
        "myst_heading_anchors": 3,
        "nb_execution_mode": "off",
        "nb_ipywidgets_js": {},
        "nb_merge_streams": True,
        "html_theme": "sphinx_book_theme",
        "html_title": title,
        "html_context": {"default_mode": "auto"},  # the reader's light or dark; unset, the theme logs an error
        "html_math_renderer": "mathml",
        "html_static_path": ["_static"],
        "html_css_files": ["course-site.css"],
        "html_use_index": False,  # the course has no index entries: an empty page
        "html_copy_source": False,
        "html_show_sourcelink": False,
        "html_theme_options": {"home_page_in_toc": True, "show_navbar_depth": 1, "show_toc_level": 2,
                               "use_download_button": False},
    }
    return "# Written by helpers/site.py on every build; edit that file, not this one.\n" + "".join(
        f"{name} = {value!r}\n" for name, value in settings.items())


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def write_source(source: Path, root: Path | None = None) -> None:
    """Lay out the Sphinx source tree of ``root``'s course (default: :func:`helpers.paths.course_root`)
    in ``source`` (an empty or new folder)."""
    root = root or course_root()
    renamed = {"README.md": "index.md", "solutions": "solutions/index.md"}
    readme = (root / "README.md").read_text(encoding="utf-8")
    title = next((line[2:].strip() for line in readme.splitlines() if line.startswith("# ")), "The course")
    write(source / "conf.py", conf_py(title))
    write(source / "_static" / "course-site.css", CSS)
    write(source / "index.md", relink(readme, "README.md", renamed)
          + toctree("Lessons", [f"notebooks/{path.stem}" for path in lessons(root)])
          + toctree("Solutions", ["solutions/index"]) + toctree("About the course", [p[:-3] for p in PAGES]))
    write(source / "solutions" / "index.md", "# Worked solutions\n\nOne notebook per lesson, its exercises worked.\n\n"
          + "".join(f"- [](./{path.name})\n" for path in solutions(root))  # an empty link text shows the title
          + toctree("Worked solutions", [path.stem for path in solutions(root)]))
    for page in PAGES:
        write(source / page, relink((root / page).read_text(encoding="utf-8"), page, renamed))
    solution_names = {path.name for path in solutions(root)}
    for path in lessons(root) + solutions(root):
        solution = f"{path.stem}_solutions.ipynb"
        link = f"../solutions/{solution}" if path.parent.name == "notebooks" and solution in solution_names else None
        notebook = static_notebook(nbformat.read(path, as_version=4), link)
        write(source / path.parent.name / path.name, nbformat.writes(notebook) + "\n")


def pages_with_maths(source: Path) -> set[str]:
    """The HTML pages (relative paths, ``notebooks/01_softmax_scoring.html``) whose source has a formula."""
    found = set()
    for path in source.rglob("*"):
        if path.suffix == ".md" and "_doctrees" not in path.parts:
            texts = [path.read_text(encoding="utf-8")]
        elif path.suffix == ".ipynb":
            texts = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]
        else:
            continue
        if any(has_maths(text) for text in texts):
            found.add(path.relative_to(source).with_suffix(".html").as_posix())
    return found


def clear(folder: Path, marker: str) -> None:
    """Empty ``folder`` for a new build, but only if it is new, empty or holds ``marker`` (a file an
    earlier build wrote there): a mistyped ``--out`` must not delete someone's files."""
    if folder.exists() and any(folder.iterdir()) and not (folder / marker).is_file():
        raise RuntimeError(f"{folder} is not empty and was not built by helpers.site; choose another --out")
    shutil.rmtree(folder, ignore_errors=True)


def build(out: Path, root: Path | None = None) -> Path:
    """Build the HTML book into ``out``, from a new source tree beside it (``<out>-source``); ``out``.

    Both folders are built afresh each time (about 5 s), so a lesson renamed or removed leaves no page
    behind. Raises ``RuntimeError`` if Sphinx reports an error or a warning (a broken link is one).
    """
    from sphinx.cmd.build import build_main

    out = Path(out).resolve()
    source = out.with_name(out.name + "-source")
    clear(out, ".buildinfo")  # Sphinx writes it into every HTML build
    clear(source, "conf.py")
    write_source(source, root)
    arguments = ["-q", "-b", "html", "-W", "--keep-going", "-d", str(source / "_doctrees"), str(source), str(out)]
    if build_main(arguments) != 0:  # -q: only warnings and errors are printed
        raise RuntimeError(f"Sphinx could not build the site from {source} (its messages are above)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.site", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=course_root() / "build" / "site", help="output folder (default build/site)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        out = build(args.out)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"the course as a website: {out / 'index.html'} ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
