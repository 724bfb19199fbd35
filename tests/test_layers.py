"""The layers import each other only downwards, as design.md's table says,
and no two modules import each other (directly or round a circle)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("sim", "firmware_model", "devices", "scenarios")

# layer prefix -> prefixes it must never import
FORBIDDEN = {
    "firmware_model": ("devices", "sim.kvm", "sim.qemu", "sim.board", "sim.machine", "sim.report"),
    "devices": ("sim.kvm", "sim.board", "firmware_model", "sim.machine"),
    "sim.kvm": ("devices", "sim.qemu", "sim.board", "firmware_model"),
    "sim.qemu": ("devices", "sim.board", "firmware_model"),
    "sim.abi": ("devices", "sim.kvm", "sim.qemu", "sim.board", "firmware_model"),
}


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            yield name, path


def _imports(path):
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _graph():
    mods = dict(_modules())
    return {m: {i for i in _imports(p) if i in mods and i != m} for m, p in mods.items()}


def _within(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


def test_layers_import_only_downwards():
    bad = [f"{m} imports {i}" for m, deps in _graph().items() for layer, banned in FORBIDDEN.items()
           if _within(m, layer) for i in deps if any(_within(i, b) for b in banned)]
    assert bad == []


def test_no_import_circle():
    graph = _graph()
    # package __init__ re-exports are not edges back up
    graph = {m: {d for d in deps if not _within(m, d)} for m, deps in graph.items()}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []
