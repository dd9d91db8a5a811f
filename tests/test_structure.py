"""The package's shape: no import cycles, and the runtime needs none of the research tools or their dependencies."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import spacy_concept_align

PACKAGE = Path(spacy_concept_align.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict:
    """Module -> the package modules it imports (at the top or inside functions alike)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            edges |= {c for c in candidates if c in modules and c != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):  # a package importing its own submodules is not a cycle
                continue
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def _runtime_modules():
    return [p for p in PACKAGE.rglob("*.py") if "research" not in p.parts and p.name != "cli.py"]


def test_runtime_imports_no_research_extra():
    extras = {"scipy", "matplotlib", "spacy_transformers"}
    found = []
    for path in _runtime_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in extras]
    assert found == []


def test_runtime_never_imports_research():
    research = [name for name, edges in import_graph().items()
                if not name.startswith("spacy_concept_align.research") and name != "spacy_concept_align.cli"
                and any(edge.startswith("spacy_concept_align.research") for edge in edges)]
    assert research == []


@pytest.mark.slow
def test_tagging_needs_no_research_module_or_extra():
    """A fresh interpreter where scipy and matplotlib cannot be imported (as when the research extra is not
    installed): the shipped default on the real encoder tags text, and no research module is loaded. (spaCy itself
    imports every installed plugin, spacy-transformers included, when it looks up a factory: the static test below
    covers that one.)"""
    code = """
import sys
for name in ("scipy", "matplotlib"):
    sys.modules[name] = None  # `import name` now fails, as if it were not installed
import spacy
nlp = spacy.blank("xx")
nlp.add_pipe("concept_align")
doc = nlp("Ndax yaa ngi fi ? Waaw .")
assert all(t.pos_ for t in doc) and sum(t.dep_ == "ROOT" for t in doc) == 1, [(t.pos_, t.dep_) for t in doc]
print("RESEARCH", [m for m in sys.modules if m.startswith("spacy_concept_align.research")])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "RESEARCH []" in out.stdout, out.stdout
