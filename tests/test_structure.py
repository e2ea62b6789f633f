"""The package's shape: no import cycle inside ``mclip/`` and no import that climbs a layer.

Read from the source (every ``import`` / ``from ... import`` at any depth, lazy ones inside
functions included, ``if TYPE_CHECKING:`` blocks left out), so a cycle hidden behind a function-
level import fails here too. The layers are CONTRIBUTING.md's: a module may import its own layer
and those below it.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mclip"

# Layer of each module, by the longest matching dotted prefix.
LAYERS = {
    "mclip.errors": 0,
    "mclip.outputs": 0,
    "mclip.fingerprint": 0,
    "mclip.cpus": 0,
    "mclip.config": 0,
    "mclip.config_schema": 0,
    "mclip.config_checks": 0,
    "mclip.config_data": 0,
    "mclip.config_distill": 0,
    "mclip.config_distill_checks": 0,
    "mclip.data.language_codes": 0,  # language tags: configs check them, every layer reads them
    "mclip.data.flores_codes": 0,
    "mclip.data": 1,
    "mclip.losses": 1,
    "mclip.models": 1,
    "mclip.eval": 2,
    "mclip.train": 3,
    "mclip.export": 4,
    "mclip.cli": 5,
    "mclip.cli_args": 5,
    "mclip.cli_data": 5,
    "mclip.cli_data_args": 5,
    "mclip.cli_eval": 5,
    "mclip.cli_eval_args": 5,
    "mclip.cli_export": 5,
    "mclip.cli_progress": 5,
    "mclip": 5,
}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def layer_of(module: str) -> int:
    prefix = module
    while prefix not in LAYERS:
        assert "." in prefix, f"{module} has no layer: add it to LAYERS and CONTRIBUTING.md"
        prefix = prefix.rpartition(".")[0]
    return LAYERS[prefix]


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:`` (types, not run)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skip.update(id(inner) for inner in ast.walk(node))
    return skip


def import_graph() -> dict[str, set[str]]:
    """{module: the mclip modules it imports}, a package counting as its __init__."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text("utf-8"))
        skip = _type_checking_only(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_checker_finds_a_cycle_and_a_climb():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("mclip.eval.report") == 2 and layer_of("mclip.data.language_codes") == 0


def test_no_import_cycle_inside_mclip():
    found = cycles(import_graph())
    assert not found, (
        "import cycles (break them by moving the shared piece down a layer): "
        + "; ".join(" <-> ".join(c) for c in found)
    )


def test_no_import_climbs_a_layer():
    climbs = sorted(
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )
    assert not climbs, "\n".join(climbs)


@pytest.mark.parametrize("module", sorted(modules()))
def test_every_module_imports_on_its_own(module):
    """Each module imports in a fresh interpreter state of its own (no hidden order dependence
    through a partly initialised cycle)."""
    import importlib
    import sys

    saved = {
        name: sys.modules.pop(name)
        for name in list(sys.modules)
        if name == "mclip" or name.startswith("mclip.")
    }
    try:
        importlib.import_module(module)
    finally:
        for name in [n for n in sys.modules if n == "mclip" or n.startswith("mclip.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def _imported_names(path: Path) -> list[tuple[str, str, int]]:
    """(module, name, line) of every ``from mclip... import name`` in ``path``, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.module, alias.name, node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mclip")
        for alias in node.names
    ]


def test_scripts_and_tests_import_only_names_mclip_has():
    """A name moved between modules breaks the scripts' and tests' imports (also those inside
    functions, which run only in slow tests): every one must resolve."""
    import importlib

    root = PACKAGE.parent
    missing = []
    for path in sorted([*root.glob("scripts/*.py"), *root.glob("tests/*.py")]):
        for module, name, line in _imported_names(path):
            owner = importlib.import_module(module)
            if not hasattr(owner, name) and importlib.util.find_spec(f"{module}.{name}") is None:
                missing.append(f"{path.relative_to(root)}:{line}: {module}.{name}")
    assert not missing, "imports of names mclip does not have:\n" + "\n".join(missing)


def test_the_cli_starts_without_the_model_stack():
    """``mclip`` parses its arguments and can catch every run-ending error without importing
    mclip's models, timm or transformers: an ``mclip eval`` of an ONNX or open_clip model does not
    pay for them (it once imported them through the trainer's fault handling, 0.5 s)."""
    import subprocess
    import sys

    code = (
        "import sys; from mclip.cli import main; main(['--help']); "
        "print([m for m in ('mclip.models.dual', 'mclip.train.trainer', 'timm', 'transformers') "
        "if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
