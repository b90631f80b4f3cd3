"""One direction of imports: no cycles, and none dodged by an import inside a function.

The layers themselves are import-linter's contracts in pyproject.toml (`make check`).
"""

from __future__ import annotations

import ast

import grimp

from conftest import REPO

# Imports inside a function that stay, and why. None may be there to break a cycle.
LOCAL_IMPORTS_KEPT = {
    # MLflow loads this file by path, also when the tracking worker saves a model: torch (and the library) is
    # imported only where a model is served.
    ("cnnlab/serving_model.py", "cnnlab.serving"),
}


def test_the_package_has_no_import_cycle():
    graph = grimp.build_graph("cnnlab", cache_dir=None)
    cycles = [(importer, imported) for importer in sorted(graph.modules)
              for imported in graph.find_modules_directly_imported_by(importer)
              if graph.chain_exists(importer=imported, imported=importer)]
    assert cycles == []


def test_no_module_imports_cnnlab_inside_a_function():
    found = set()
    for path in sorted((REPO / "src").rglob("*.py")):
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                found |= {(str(path.relative_to(REPO / "src")), name) for name in names
                          if name.split(".")[0] in ("cnnlab", "cnnlab_tools")}
    assert found == LOCAL_IMPORTS_KEPT
