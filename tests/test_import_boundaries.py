"""The folders are the architecture: sweeps/ -> shared/ <- serving/. shared/ never imports ray.tune or
ray.serve; sweeps/ and serving/ never import each other. Walks the real import statements."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "shared": ("ray.tune", "ray.serve", "ray.train", "sweeps", "serving"),
    "sweeps": ("serving",),
    "serving": ("sweeps", "ray.tune"),
}


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_go_one_way(package):
    files = sorted((REPO / package).rglob("*.py"))
    bad = [
        f"{f.relative_to(REPO)} imports {name}"
        for f in files
        for name in sorted(imports_of(f))
        if any(name == b or name.startswith(b + ".") for b in FORBIDDEN[package])
    ]
    assert not bad, "\n".join(bad)


def test_the_walker_sees_violations(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("from ray import tune\nimport ray.serve as s\ndef g():\n    from sweeps.run import main\n")
    assert {"ray.tune", "ray.serve", "sweeps.run"} <= imports_of(f)
