"""The house as the README's Architecture section draws it: every module of etl is in the
picture, and imports go one way only, from a later layer to an earlier one."""

import ast
from pathlib import Path

from tests.docs import page

ROOT = Path(__file__).parents[2]
README = page("development.md")
# the order in which rooms may import each other: a module imports its own package's modules
# and those of the layers before it, never after
LAYERS = [
    "etl.base",
    "etl.handlers",
    "etl.source",
    "etl.store",
    "etl.ingest",
    "etl.act",
    "etl.read",
    "etl.console",
    "etl.serve",
    "etl.sandbox",
    "etl.cli",
]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "etl").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def layer(module: str) -> int:
    (index,) = [i for i, prefix in enumerate(LAYERS) if (module + ".").startswith(prefix + ".")]
    return index


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("etl"):
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("etl")}
    return names - {"etl"}


def test_every_module_is_in_the_readmes_picture() -> None:
    picture = README.split("## Architecture")[1].split("```")[1]
    for name in modules():
        parts = name.split(".")
        if parts[-1] in ("etl", "__main__") or name in ("etl.cli", "etl.sandbox", "etl.console"):
            continue
        folder = "etl/" + "/".join(parts[1:-1]) + "/" if len(parts) > 2 else "etl/"
        assert folder in picture, name
        assert parts[-1] in picture, name


def test_imports_go_from_a_later_layer_to_an_earlier_one() -> None:
    found = modules()
    wrong = []
    for name, path in found.items():
        if name in ("etl", "etl.__main__"):
            continue
        for target in imported(path):
            if target not in found and target.rsplit(".", 1)[0] in found:
                target = target.rsplit(".", 1)[0]  # a name imported from a module
            if target in found and target != "etl" and layer(target) > layer(name):
                wrong.append(f"{name} -> {target}")
    assert wrong == []
