"""netspec's modules import one another without a circle (imports inside functions count)."""
import ast
from pathlib import Path

import networkx as nx

import netspec

PACKAGE = Path(netspec.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = ("netspec",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The netspec modules ``path`` imports anywhere in its body, resolved to modules
    (``from .x import name`` is module ``x.name`` when that is a module, else ``x``)."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != this}


def import_graph() -> nx.DiGraph:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for f in files:
        src = module_name(f)
        for dst in imported_modules(f, modules):
            # a module importing its own package's __init__ (or a parent) is how Python
            # loads any submodule: not a dependency edge of the module's code
            if not src.startswith(dst + "."):
                graph.add_edge(src, dst)
    return graph


def test_the_graph_sees_the_imports():
    graph = import_graph()
    assert graph.has_edge("netspec.api", "netspec.check")
    assert graph.has_edge("netspec.cli.check_cmd", "netspec.check.solver")
    assert len(graph) > 50


def describe_cycles(graph: nx.DiGraph) -> list[str]:
    """One line per circle of modules: its size, members and one cycle as ``a -> b -> a``."""
    lines = []
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1:
            cycle = [a for a, _ in nx.find_cycle(graph.subgraph(component))]
            lines.append(f"{len(component)} modules in one circle ({', '.join(sorted(component))}), "
                         f"e.g. {' -> '.join(cycle + cycle[:1])}")
    return lines


def test_a_cycle_is_reported_as_a_path():
    graph = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])
    assert describe_cycles(graph) == ["3 modules in one circle (a, b, c), e.g. a -> b -> c -> a"]


def test_no_import_cycle():
    cycles = describe_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_weights_io_lives_in_interop_and_layers_read_blobs_through_a_leaf():
    graph = import_graph()
    interop = [m for m in graph if m.startswith("netspec.interop")]
    assert not [(a, b) for a in interop for b in graph.successors(a) if b.startswith("netspec.solve")]
    leaf = set(nx.descendants(graph, "netspec.interop.blobproto"))
    assert leaf <= {"netspec.proto", "netspec.proto.caffe_pb2"}
    layer_modules = [m for m in graph if m.startswith("netspec.layers")]
    assert {b for a in layer_modules for b in graph.successors(a) if b.startswith("netspec.interop")} \
        <= {"netspec.interop.blobproto"}
