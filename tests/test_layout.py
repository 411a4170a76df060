"""The package's shape: every arrow points down.

No module imports one that imports it back (imports under ``TYPE_CHECKING`` and inside
functions count too), and no module reaches into another's private names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import addvocals_async

PACKAGE = Path(addvocals_async.__file__).parent
ROOT = "addvocals_async"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, ast.Module]:
    return {
        module_name(path): ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base.pop()
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Every package module ``name`` imports, wherever the import statement stands."""
    is_package = (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(ROOT))
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, is_package, node)
            if not target.startswith(ROOT):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    found.discard(name)
    return {m for m in found if m in known}


def test_no_module_imports_one_that_imports_it_back() -> None:
    trees = modules()
    known = set(trees)
    graph = {name: imports_of(name, tree, known) for name, tree in trees.items()}

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        stack = list(graph[start])
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(graph[current])
        return seen

    cycles = sorted(name for name in graph if name in reachable(name))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_the_graph_sees_function_level_and_type_checking_imports() -> None:
    """The check above would be toothless if it missed the imports it must count."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ._client import AddVocalsClient\n"
        "def f():\n    from .cli import main\n"
    )
    found = imports_of(
        "addvocals_async._tasks", tree, {"addvocals_async._client", "addvocals_async.cli"}
    )
    assert found == {"addvocals_async._client", "addvocals_async.cli"}


def own_private_names(tree: ast.Module) -> set[str]:
    """The private names a module defines itself: functions, classes, attributes it
    assigns, ``__slots__`` entries."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ and setattr-style names
    return {name for name in names if name.startswith("_")}


def external_modules(tree: ast.Module) -> set[str]:
    """Names bound to modules outside the package (``argparse``, ``asyncio``, …)."""
    return {
        (alias.asname or alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if not alias.name.startswith(ROOT)
    }


def test_no_module_uses_another_modules_private_names() -> None:
    offenders = []
    for name, tree in modules().items():
        own = own_private_names(tree)
        external = external_modules(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (
                node.level or (node.module or "").startswith(ROOT)
            ):
                offenders += [
                    f"{name}: from {node.module} import {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
            elif (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and node.attr not in own
                and not (isinstance(node.value, ast.Name) and node.value.id in external)
            ):
                offenders.append(f"{name}: {ast.unparse(node)}")
    assert offenders == []
