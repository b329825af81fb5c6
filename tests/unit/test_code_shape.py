"""The shape of the code, machine-checked: no import cycles, short functions, and an architecture
page whose policy lists are the code's.

- Import cycles. The graph holds every module of our packages (import-linter's `root_packages` in
  pyproject.toml, and the embedded cluster's `minicluster`; a package's `__init__` is a module of its
  own) and every import in them: at module level, inside functions (a function-level import only
  hides a cycle until that function runs) and under `TYPE_CHECKING` (a cycle only the type checker
  follows still means neither module can be understood without the other). A cycle between modules
  fails, including one through a package's `__init__` (that `__init__` really imports the module
  that imports it). A cycle that exists only between packages seen as wholes (`a.x` imports `b.y`,
  `b.z` imports `a.w`) is allowed: no module waits on a partly initialised one, and import-linter's
  layer and independence contracts are where package direction is decided.
- Function length. No function or method of the product (operator, trainer image, dashboard,
  benchmarks, the embedded cluster) is longer than 60 lines, `def` line to last line, nested
  functions included in their parent's count.
- docs/architecture.md lists each kind's policy steps under "### <Kind> policy", one numbered line
  per step ("1. `invalid_spec` — what it does"), exactly as `STEPS` of that kind's `decide.py`
  runs them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES: list[str] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
CLUSTER_PACKAGE_DIR = REPO / "embedded-cluster" / "minicluster"  # the embedded cluster's Python package
PRODUCT_DIRS = [REPO / "operator", REPO / "trainer_image", REPO / "dashboard", REPO / "bench"]
MAX_FUNCTION_LINES = 60
# A kind per entry: its policy is `kubeforge_operator.<kind>.decide.STEPS`, listed in
# docs/architecture.md under "### <Kind> policy" (<Kind> as kubeforge_api.<kind> spells its class).
POLICY_KINDS = ["trainingjob", "servingjob"]
STEP_LINE = re.compile(r"^(\d+)\. `(\w+)` — \S")


def _cluster_package() -> Path | None:
    """The embedded cluster's package folder: where it imports from, else where the checkout has it."""
    spec = importlib.util.find_spec("minicluster")
    if spec is not None and spec.origin is not None:
        return Path(spec.origin).parent
    return CLUSTER_PACKAGE_DIR if (CLUSTER_PACKAGE_DIR / "__init__.py").is_file() else None


def _build(*packages: str) -> grimp.ImportGraph:
    """Every import counts: grimp's defaults keep function-level and `TYPE_CHECKING` imports."""
    return grimp.build_graph(*packages, cache_dir=None, exclude_type_checking_imports=False)


def _graph() -> grimp.ImportGraph:
    cluster = _cluster_package()
    if cluster is None or importlib.util.find_spec("minicluster") is not None:
        return _build(*PACKAGES, *(["minicluster"] if cluster else []))
    sys.path.append(str(cluster.parent))
    try:
        return _build(*PACKAGES, "minicluster")
    finally:
        sys.path.remove(str(cluster.parent))


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative),
    each given as one concrete cycle through its first module."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            nxt = next(successors, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(edges[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
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
                    components.append(sorted(component))
    cycles = []
    for component in components:
        start = component[0]
        back = next(m for m in edges[start] if m in component)
        chain = graph.find_shortest_chain(importer=back, imported=start)  # stays inside the component
        assert chain is not None
        cycles.append([start, *chain])
    return cycles


def test_cycle_finder_sees_a_cycle_hidden_in_a_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "shapecheck_sample"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""A package with a cycle a -> b -> c -> a."""\n')
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from .c import g\n")
    (pkg / "c.py").write_text("def g() -> None:\n    from .a import b  # only when g runs\n")
    (pkg / "d.py").write_text("from . import a\n")  # imports into the cycle, is not part of it
    monkeypatch.syspath_prepend(str(tmp_path))
    cycles = _cycles(_build("shapecheck_sample"))
    assert cycles == [["shapecheck_sample.a", "shapecheck_sample.b", "shapecheck_sample.c", "shapecheck_sample.a"]]
    (pkg / "c.py").write_text("def g() -> None:\n    pass\n")
    assert _cycles(_build("shapecheck_sample")) == []


def test_no_import_cycle_between_modules() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (each shown once, importer -> imported):\n" + "\n".join(
        " -> ".join(c) for c in cycles)


def _product_files() -> list[Path]:
    files = [p for d in PRODUCT_DIRS for p in d.rglob("*.py")]
    cluster = _cluster_package()
    if cluster is not None:
        files.extend(cluster.rglob("*.py"))
    return sorted(p for p in set(files) if ".venv" not in p.parts and "__pycache__" not in p.parts)


def _long_functions(path: Path) -> Iterator[tuple[str, int]]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                yield node.name, lines


def test_no_product_function_over_60_lines() -> None:
    files = _product_files()
    assert any(p.parts[-2:] == ("kubeforge_operator", "controller.py") for p in files)  # the walk found the code
    assert _cluster_package() is not None, "the embedded cluster's package was not found"
    offenders = [f"{p.relative_to(REPO)}:{name}:{lines}" for p in files for name, lines in _long_functions(p)]
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines (file:function:lines): {offenders}"


def _documented_steps(doc: str, heading: str) -> list[str]:
    """The step names of the numbered list under `heading` (up to the next heading), checking that
    the numbers run 1, 2, 3..."""
    lines = doc.splitlines()
    assert heading in lines, f"docs/architecture.md has no {heading!r} section"
    names: list[str] = []
    for line in lines[lines.index(heading) + 1:]:
        if line.startswith("#"):
            break
        m = STEP_LINE.match(line)
        if m:
            assert int(m.group(1)) == len(names) + 1, f"{heading}: {line!r} is numbered out of order"
            names.append(m.group(2))
    return names


def _kind_name(kind: str) -> str:
    """`TrainingJob` for `trainingjob`: the class of that name in the contract."""
    api = importlib.import_module(f"kubeforge_api.{kind}")
    return next(name for name in dir(api) if name.lower() == kind)


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_architecture_lists_each_policy_step_in_order(kind: str) -> None:
    steps = importlib.import_module(f"kubeforge_operator.{kind}.decide").STEPS
    heading = f"### {_kind_name(kind)} policy"
    documented = _documented_steps((REPO / "docs" / "architecture.md").read_text(), heading)
    assert documented == [s.__name__ for s in steps], f"{heading} in docs/architecture.md is not `STEPS`"
