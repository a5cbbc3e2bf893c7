"""The repository's layout rules: the library imports nothing from the lab or from tools/, the tests import the
library or the lab rather than running tools/ scripts, and the tools/ scripts are thin entry points."""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Top-level names the library must never import.
OUTSIDE = {"fusionlab", "tools"}
#: The longest a tools/ script may be: an import of the command's ``main`` and a call.
THIN_LINES = 20


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _imported(tree) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a parsed module (relative imports stay in their package)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.append((node.lineno, node.module))
    return out


def _sys_path_edits(tree) -> list[tuple[int, str]]:
    """(line, source) of every call of a ``sys.path`` method (insert, append, extend, ...)."""
    return [(node.lineno, ast.unparse(node)) for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and ast.unparse(node.func.value) == "sys.path"]


def test_library_imports_nothing_from_the_lab_or_tools():
    """No module under pyfusion/ imports fusionlab or tools (read from the source, whatever is installed)."""
    files = sorted((ROOT / "pyfusion").rglob("*.py"))
    assert len(files) > 10
    bad = [f"{_rel(f)}:{line}: {mod}" for f in files for line, mod in _imported(ast.parse(f.read_text()))
           if mod.split(".")[0] in OUTSIDE]
    assert not bad, f"the library imports the lab or tools/: {bad}"


#: Imports pyfusion and every submodule, then prints the lab modules in sys.modules. A module whose import fails
#: for want of a third-party package (an optional dependency: torch, ...) is listed as skipped.
IMPORT_ALL = """
import importlib, importlib.util, json, pkgutil, sys
import pyfusion
done, skipped = ["pyfusion"], {}
def import_(name):
    try:
        importlib.import_module(name)
        done.append(name)
    except ImportError as e:
        if (e.name or "pyfusion").split(".")[0] in ("pyfusion", "fusionlab", "tools"):
            raise
        skipped[name] = e.name
for m in pkgutil.walk_packages(pyfusion.__path__, "pyfusion.", onerror=import_):
    if not m.name.endswith(".__main__"):
        import_(m.name)
print(json.dumps({"done": done, "skipped": skipped, "lab_installed": importlib.util.find_spec("fusionlab") is not None,
                  "lab": sorted(k for k in sys.modules if k.split(".")[0] in ("fusionlab", "tools"))}))
"""


def test_importing_the_library_loads_no_lab_module(tmp_path):
    """In a fresh interpreter (outside the checkout) where the lab is installed, importing pyfusion and every
    pyfusion submodule leaves fusionlab and tools out of sys.modules."""
    r = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["lab_installed"], "fusionlab is not importable here, so the check would prove nothing (make venv)"
    assert {"pyfusion.fusion", "pyfusion.net", "pyfusion.models", "pyfusion.methods.cnn"} <= set(out["done"])
    assert not out["lab"], f"importing the library loaded {out['lab']} (skipped for missing packages: {out['skipped']})"


def _tool_uses(tree) -> list[tuple[int, str]]:
    """(line, source) of every place a test puts tools/ on sys.path or names a tools/ script as a path: a string
    (not a docstring) holding ``tools/NAME.py``, or a path built with ``/ "tools"``."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    out = [(line, src) for line, src in _sys_path_edits(tree) if "tools" in src]
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and not isinstance(parents.get(node), ast.Expr):
            if re.search(r"(^|/)tools/\w+\.py", node.value):
                out.append((node.lineno, node.value))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and any(
                isinstance(x, ast.Constant) and x.value in ("tools", "tools/") for x in (node.left, node.right)):
            out.append((node.lineno, ast.unparse(node)))
    return sorted(dict(sorted(out, key=lambda x: len(x[1]))).items())   # one per line: the longest source


def test_tool_uses_finds_each_kind():
    """The scanner of the next test flags each way a test can reach a tools/ script, and not a docstring."""
    src = ('"""runs tools/fuse.py"""\nimport sys\nsys.path.insert(0, str(ROOT / "tools"))\n'
           'run([sys.executable, "tools/fuse.py"])\nrun([sys.executable, str(ROOT / "tools" / "batch.py")])\n')
    assert [line for line, _ in _tool_uses(ast.parse(src))] == [3, 4, 5]


def test_tests_do_not_run_tools_scripts():
    """Tests import the library or the lab (or run the `pyfusion` command / `python -m fusionlab`), not tools/
    scripts: no tools/ folder on sys.path, no tools/NAME.py run as a script. This file is the checker (it reads
    tools/ as data) and is left out."""
    bad = [f"{_rel(f)}:{line}: {src}" for f in sorted((ROOT / "tests").glob("*.py")) if f.name != Path(__file__).name
           for line, src in _tool_uses(ast.parse(f.read_text()))]
    assert not bad, f"tests reaching tools/ scripts: {bad}"


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "tools").glob("*.py")))
def test_tools_scripts_are_thin(script):
    """Each tools/ script is an entry point of at most THIN_LINES lines with no sys.path edits: the code lives in
    the library or the lab."""
    text = (ROOT / "tools" / script).read_text()
    assert not _sys_path_edits(ast.parse(text)), f"tools/{script} edits sys.path"
    lines = len(text.splitlines())
    assert lines <= THIN_LINES, f"tools/{script} has {lines} lines: move its code into the library or the lab"
