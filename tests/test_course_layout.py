"""The course's shape: every lesson is listed, opens properly, and is in the README."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from conftest import NOTEBOOK_DATA

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_numbered_and_registered():
    assert NOTEBOOKS, "no lessons found"
    for path in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), path.name
        assert path.name in NOTEBOOK_DATA, f"{path.name}: add its datasets to LESSON_DATA in helpers/catalogue.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_objectives_and_is_committed_with_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    opening = notebook.cells[0].source
    for heading in ("Objectives", "Prerequisites", "Expected run time"):
        assert heading in opening, f"{path.name}: first cell lacks '{heading}'"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code), f"{path.name}: commit it executed"
    assert not any(o.output_type == "error" for cell in code for o in cell.outputs), f"{path.name}: has errors"
    assert "sys.path" not in "".join(cell.source for cell in code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_readme_lists_every_lesson(path):
    assert path.name in (ROOT / "README.md").read_text()


REQUIRED_CHINESE_TERMS = ["推荐系统", "联邦学习", "迁移学习", "客户端", "服务器", "全局模型", "局部模型", "源任务", "目标任务",
                          "共享知识", "微调", "冷启动", "客户端漂移", "非独立同分布", "差分隐私", "安全聚合", "梯度下降",
                          "学习率", "温度", "矩阵分解", "嵌入", "通信开销", "负迁移"]


def test_glossary_has_the_course_terms_and_links_to_real_lessons():
    glossary = (ROOT / "GLOSSARY.md").read_text()
    missing = [term for term in REQUIRED_CHINESE_TERMS if term not in glossary]
    assert not missing, f"GLOSSARY.md lacks {missing}"
    for link in re.findall(r"\]\((notebooks/[^)]+)\)", glossary):
        assert (ROOT / link).exists(), link


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chinese_readme_lists_every_lesson(path):
    assert f"[`{path.name}`](notebooks/{path.name})" in (ROOT / "README.zh-CN.md").read_text()


DEVELOPMENT_ONLY = ("shared/datasets", "../shared", "/work/")  # folders of the course's development machines


def learner_visible_strings():
    """(where, text) of every string a learner can meet: string literals (messages, docstrings,
    f-string parts) of helpers/, the root conftest and the Makefile, and notebook and solution outputs."""
    import ast

    for path in sorted((ROOT / "helpers").rglob("*.py")) + [ROOT / "conftest.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield f"{path.relative_to(ROOT)}:{node.lineno}", node.value
    yield "Makefile", (ROOT / "Makefile").read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            for output in cell.get("outputs", []):
                text = output.get("text", "") + "".join(str(v) for k, v in output.get("data", {}).items()
                                                          if k.startswith("text/"))
                yield f"{path.relative_to(ROOT)} (output)", text


def test_no_message_or_output_points_to_a_development_only_folder():
    found = [f"{where}: {text.strip()[:100]!r}" for where, text in learner_visible_strings()
             if any(marker in text for marker in DEVELOPMENT_ONLY)]
    assert not found, "a learner cannot act on these (name a folder of theirs or the README):\n" + "\n".join(found)
