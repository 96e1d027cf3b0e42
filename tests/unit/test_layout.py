"""The package's shape: one tower of imports with the two entry points at the top, and modules a newcomer can read.

Read from the source (module-level imports, TYPE_CHECKING ones excluded: they cost nothing at run time).
And the tests' shape: what they share is in tests/support, never in another test module or a conftest.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "lambda_chat"
ENTRY_POINTS = {"handler", "asgi"}
MAX_LINES = 450
TESTS = Path(__file__).resolve().parents[1]


@cache
def imports() -> dict[str, set[str]]:
    """Each module of the package, and the package's modules it imports when it is imported."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        found: set[str] = set()
        for node in tree.body:  # module level only: imports inside functions are made when they run
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for child in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
                if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("lambda_chat"):
                    names = [child.module] + [f"{child.module}.{alias.name}" for alias in child.names]
                    found.update(name.removeprefix("lambda_chat.") for name in names if _is_module(name))
                elif isinstance(child, ast.Import):
                    found.update(
                        alias.name.removeprefix("lambda_chat.") for alias in child.names if _is_module(alias.name)
                    )
        graph[path.stem] = found - {path.stem}
    return graph


def _is_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "lambda_chat" and len(parts) == 2 and (PACKAGE / f"{parts[1]}.py").exists()


def test_the_imports_make_one_tower_with_both_entry_points_on_top() -> None:
    # Given the import graph of the package
    graph = imports()
    # Then it has no cycle
    levels: dict[str, int] = {}

    def level(module: str, seen: tuple[str, ...] = ()) -> int:
        assert module not in seen, f"import cycle: {' -> '.join((*seen, module))}"
        if module not in levels:
            levels[module] = 1 + max((level(child, (*seen, module)) for child in graph[module]), default=0)
        return levels[module]

    for module in graph:
        level(module)
    # And nothing imports an entry point, and the two entry points share one core below them
    importers = {child for children in graph.values() for child in children}
    assert not ENTRY_POINTS & importers
    assert "service" in _closure("handler") and "service" in _closure("asgi")


def test_the_handlers_import_path_leaves_the_stream_and_the_asgi_app_out() -> None:
    # Given a process that imports the handler function's module, as Lambda's init does
    code = "import sys, lambda_chat.handler; print(' '.join(sorted(sys.modules)))"
    environment = {"OPENAI_API_KEY_SECRET_ID": "x", "AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"}
    environment["PYTHONPATH"] = str(PACKAGE.parent)
    loaded = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
    modules = set(loaded.stdout.split())
    # Then neither the stream machinery nor the ASGI app (nor uvicorn) was imported
    assert "lambda_chat.service" in modules
    assert not {"lambda_chat.stream", "lambda_chat.asgi", "uvicorn"} & modules


def test_no_module_is_longer_than_a_newcomer_reads_at_once() -> None:
    lengths = {path.name: len(path.read_text().splitlines()) for path in PACKAGE.glob("*.py")}
    assert {name: lines for name, lines in lengths.items() if lines > MAX_LINES} == {}


def _closure(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        for child in imports()[todo.pop()]:
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def test_no_test_module_imports_another_test_module_or_a_conftest() -> None:
    # Given every Python file under tests/ (test modules, conftests, support modules, scripts)
    offenders: dict[str, list[str]] = {}
    for path in sorted(TESTS.rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        # When its imports (anywhere in the file, relative ones resolved) are read
        package = ("tests", *path.relative_to(TESTS).parent.parts)
        for name in _imported(ast.parse(path.read_text()), package):
            if name.split(".")[0] == "tests" and name.split(".")[:2] != ["tests", "support"]:
                offenders.setdefault(str(path.relative_to(TESTS.parent)), []).append(name)
    # Then the only part of tests/ any of them imports is tests/support: helpers live there, fixtures in conftests
    assert offenders == {}, f"move what these import into tests/support: {offenders}"


def _imported(tree: ast.AST, package: tuple[str, ...]) -> list[str]:
    """The modules (or names in them) a file imports: `from tests import conftest` gives tests.conftest."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join((*base, *([node.module] if node.module else [])))
            found += [f"{module}.{alias.name}" for alias in node.names]
    return found
