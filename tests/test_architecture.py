"""Architecture rules that must not regress: no import circle, the model's dependencies.

The import graph counts every `import` in a module, at any depth (a function-level import
is still a dependency: the old train <-> sample circle was two lazy imports).

  python -m tests.test_architecture        # prints the graph's cycles (none) and edges
"""

from __future__ import annotations

import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "stiv_jax"


def _modules() -> dict[str, str]:
    """{dotted module name: file path} of every module of the package."""
    out = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
            out[rel.removesuffix(".__init__")] = os.path.join(dirpath, f)
    return out


def import_graph() -> dict[str, set[str]]:
    """{module: modules of the package it imports} (edges to the named module itself)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        with open(path) as fh:
            tree = ast.parse(fh.read(), path)
        pkg = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                names = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
                ]
            for name in names:
                if name in mods and name != mod:
                    graph[mod].add(name)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert find_cycles(import_graph()) == []


def test_model_imports_only_the_sharding_rules():
    graph = import_graph()
    allowed_prefixes = ("stiv_jax.model", "stiv_jax.kernels", "stiv_jax.conditioning")
    for mod, deps in graph.items():
        if not mod.startswith("stiv_jax.model"):
            continue
        for dep in deps:
            ok = dep.startswith(allowed_prefixes) or dep == "stiv_jax.parallel.rules"
            assert ok, f"{mod} imports {dep}; the model may import only parallel.rules"


def test_kernels_and_rules_stay_below_the_model():
    graph = import_graph()
    for mod, deps in graph.items():
        if mod.startswith(("stiv_jax.kernels", "stiv_jax.parallel.rules", "stiv_jax.conditioning")):
            bad = [d for d in deps if d.startswith(("stiv_jax.model", "stiv_jax.train"))]
            assert not bad, f"{mod} imports {bad}"


def test_importing_the_package_changes_no_global_setting():
    import subprocess

    code = (
        "import jax; from flax import nnx; before = (nnx.using_eager_sharding(), "
        "jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision);"
        "import stiv_jax, stiv_jax.model, stiv_jax.train, stiv_jax.pipeline;"
        "after = (nnx.using_eager_sharding(), jax.config.jax_enable_x64, "
        "jax.config.jax_default_matmul_precision); assert before == after, (before, after)"
    )
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


if __name__ == "__main__":
    g = import_graph()
    print(f"{len(g)} modules, {sum(map(len, g.values()))} import edges")
    print("cycles:", find_cycles(g) or "none")
