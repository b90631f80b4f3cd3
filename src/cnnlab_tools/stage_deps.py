"""Every DVC stage depends on the code it runs, and nothing else: dvc.yaml's code deps against import closures.

    python -m cnnlab_tools.stage_deps          # check dvc.yaml; exit 1, naming each file to add or remove
    python -m cnnlab_tools.stage_deps --show   # the code deps each stage of dvc.yaml needs

Run from a project root, with that project's `src` first on the Python path. A stage runs its script, the
cnnlab modules the script imports, theirs in turn, and the package __init__ files above each. That import
closure (grimp's graph of src/cnnlab, imports inside functions included) is what dvc.yaml must list for
the stage, resolved per stage as DVC resolves `foreach` entries. Two refinements:

- A stage that imports cnnlab.data.kinds loads one kind module more, by name: the one of the dataset it is
  named after (download@mnist loads cnnlab.data.kinds.mnist), listed in dvc.yaml as
  `src/cnnlab/data/kinds/${item.kind}.py`.
- A `foreach` template has one deps list for all its entries (DVC interpolates `${item...}` but cannot vary
  the list), so an entry may list a file that only another entry of the same template imports.

Left out of every closure, because they cannot change what a stage writes (NOT_RESULTS); a change to them
re-runs nothing. A package __init__ holding only its docstring is left out too: it runs no code.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import grimp

PACKAGE = "cnnlab"
KINDS_LOADER = "cnnlab.data.kinds"
NOT_RESULTS = {
    # Its methods take values and return nothing, and cnnlab.tracking imports no code that computes outputs
    # (an import-linter contract in pyproject.toml): a run's MLflow record, never the files DVC caches.
    "cnnlab.tracking.client": "records runs in MLflow",
    # Reads params.yaml and git for the tags that group a sweep's runs in MLflow.
    "cnnlab.tracking.sweeps": "tags a sweep's runs in MLflow",
    # Draws on the terminal.
    "cnnlab.engine.progress": "draws the progress bar",
}


@dataclass(frozen=True)
class Stage:
    name: str  # e.g. download@mnist
    script: Path  # stages/download.py, from its cmd
    code_deps: frozenset[str]  # its deps under src/ and stages/, directories expanded into their .py files

    @property
    def template(self) -> str:
        return self.name.split("@", 1)[0]

    @property
    def key(self) -> str:
        return self.name.split("@", 1)[1] if "@" in self.name else ""


@dataclass(frozen=True)
class Mismatch:
    stage: str
    missing: tuple[str, ...]  # imported, not in dvc.yaml: `dvc repro` would serve stale results
    extra: tuple[str, ...]  # in dvc.yaml, imported by no entry of the template: needless re-runs


def stages(root: Path) -> list[Stage]:
    """dvc.yaml's stages as DVC resolves them, with their script and code deps."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    found = []
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            words = stage.cmd.split() if isinstance(stage.cmd, str) else []
            scripts = [w for w in words if w.startswith("stages/") and w.endswith(".py")]
            if not scripts:
                continue
            code = set()
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency) or not dep.def_path.startswith(("src/", "stages/")):
                    continue
                path = root / dep.def_path
                files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
                code |= {str(p.relative_to(root)) for p in files if not _docstring_only_init(p)}
            found.append(Stage(stage.addressing, Path(scripts[0]), frozenset(code)))
    return found


def dataset_kinds(root: Path) -> dict[str, str]:
    import yaml

    params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    return {name: entry.get("kind", "") for name, entry in (params.get("datasets") or {}).items()}


class Closures:
    """Import closures over the cnnlab package found on sys.path (the project's src)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.graph = grimp.build_graph(PACKAGE, cache_dir=None)
        self.package_dir = Path(importlib.import_module(PACKAGE).__path__[0])

    def of_script(self, script: Path, kind_of: dict[str, str], stage_key: str) -> set[str]:
        start = set(_cnnlab_imports(self.root / script, self.graph.modules))
        modules = self._closure(start)
        if KINDS_LOADER in modules and stage_key in kind_of:
            modules |= self._closure({f"{KINDS_LOADER}.{kind_of[stage_key]}"})
        return {str(script)} | {path for module in modules if (path := self.path_of(module))}

    def _closure(self, start: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        todo = [m for m in start if m not in NOT_RESULTS]
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
            todo += [
                m
                for m in (*self.graph.find_modules_directly_imported_by(module), *parents)
                if m not in seen and m not in NOT_RESULTS
            ]
        return seen

    def path_of(self, module: str) -> str | None:
        """The module's file relative to the project root; None for a package __init__ that only has a docstring."""
        relative = Path(*module.split(".")[1:])
        path = self.package_dir / relative / "__init__.py"
        if not path.is_file():
            path = (self.package_dir / relative).with_suffix(".py")
        if _docstring_only_init(path):
            return None
        return str(Path("src") / PACKAGE / path.relative_to(self.package_dir))


def _cnnlab_imports(script: Path, modules: set[str]) -> list[str]:
    """The cnnlab modules a script imports (`from cnnlab.x import y` is module cnnlab.x.y if that is a module)."""
    found = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                for alias in node.names
            ]
    return [name for name in found if name.split(".")[0] == PACKAGE]


def _docstring_only_init(path: Path) -> bool:
    if path.name != "__init__.py" or not path.is_file():
        return False
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def needed(root: Path) -> dict[str, set[str]]:
    """Per stage, the files its code deps must hold."""
    closures, kinds = Closures(root), dataset_kinds(root)
    return {stage.name: closures.of_script(stage.script, kinds, stage.key) for stage in stages(root)}


def check(root: Path) -> list[Mismatch]:
    found = stages(root)
    closures, kinds = Closures(root), dataset_kinds(root)
    need = {stage.name: closures.of_script(stage.script, kinds, stage.key) for stage in found}
    template_union: dict[str, set[str]] = {}
    for stage in found:
        template_union.setdefault(stage.template, set()).update(need[stage.name])
    mismatches = []
    for stage in found:
        missing = tuple(sorted(need[stage.name] - stage.code_deps))
        extra = tuple(sorted(stage.code_deps - template_union[stage.template]))
        if missing or extra:
            mismatches.append(Mismatch(stage.name, missing, extra))
    return mismatches


def _grouped(mismatches: list[Mismatch]) -> list[tuple[str, str, str]]:
    """(stages, file, "missing" or "extra"), one line per file and template: `train@a, train@b` of a foreach
    missing the same file read `train (2 entries: train@a, train@b)`."""
    by_problem: dict[tuple[str, str, str], list[str]] = {}
    for mismatch in mismatches:
        template = mismatch.stage.split("@", 1)[0]
        for problem, files in (("missing", mismatch.missing), ("extra", mismatch.extra)):
            for file in files:
                by_problem.setdefault((template, file, problem), []).append(mismatch.stage)
    lines = []
    for (template, file, problem), names in by_problem.items():
        named = names[0] if len(names) == 1 else f"{template} ({len(names)} entries: {', '.join(names)})"
        lines.append((named, file, problem))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true", help="print the code deps each stage needs")
    args = parser.parse_args(argv)
    root = Path.cwd()
    if args.show:
        for name, files in needed(root).items():
            print(f"{name}:\n" + "".join(f"  - {file}\n" for file in sorted(files)))
        return 0
    mismatches = check(root)
    for stages_named, file, problem in _grouped(mismatches):
        if problem == "missing":
            print(f"dvc.yaml: stage {stages_named} runs {file}; add it to the stage's deps")
        else:
            print(f"dvc.yaml: stage {stages_named} lists {file}, which none of its entries imports; remove it")
    if not mismatches:
        print("dvc.yaml: every stage depends on exactly the code it runs")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
