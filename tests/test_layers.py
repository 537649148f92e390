"""The house: subpackages are layers, imports go only one way, no module or function grows past
what a reader takes in, and README's Layout names every module."""

import ast
import re
from pathlib import Path

import pytorch_cli

PACKAGE = Path(pytorch_cli.__file__).parent
README = PACKAGE.parent / "README.md"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def _runtime_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every pytorch_cli import, at any depth, except type-checking ones."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("pytorch_cli")
        ):
            names = [node.module] if node.module != "pytorch_cli" else \
                [f"pytorch_cli.{a.name}" for a in node.names]
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("pytorch_cli")]
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return (
        pytorch_cli.LAYERS.index(parts[1])
        if len(parts) > 1 and parts[1] in pytorch_cli.LAYERS
        else None
    )


def test_every_module_lives_in_a_layer():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert loose == []
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()) == \
        sorted(pytorch_cli.LAYERS)


def test_imports_only_go_down_the_layers():
    upward = []
    for path in MODULES:
        here = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        mine = _layer(here)
        for line, target in _runtime_imports(ast.parse(path.read_text())):
            theirs = _layer(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert upward == []


def test_no_module_over_300_lines_and_no_function_over_60():
    long_files = [f"{p.name}: {n}" for p in MODULES if (n := len(p.read_text().splitlines())) > 300]
    long_functions = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1 + len(node.decorator_list)
                if n > 60:
                    long_functions.append(f"{path.name}:{node.name}: {n}")
    assert long_files == [] and long_functions == []


def test_readme_layout_names_every_module_in_layer_order():
    layout = README.read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^pytorch_cli/(\S+\.py)", layout, flags=re.M)
    modules = [str(p.relative_to(PACKAGE)) for p in MODULES if p.name != "__init__.py"]
    assert sorted(listed) == sorted(modules)
    order = [pytorch_cli.LAYERS.index(m.split("/")[0]) for m in listed if "/" in m]
    assert order == sorted(order, reverse=True)  # top layer first, as calls flow
