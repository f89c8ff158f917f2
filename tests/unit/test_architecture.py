"""The house as the README's Architecture section draws it: every module of etl is in the
picture, and imports go one way only, from a later layer to an earlier one."""

import ast
import re
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
    "etl.jobs",
    "etl.serve",
    "etl.sandbox",
    "etl.devices",
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


# beside the order: rooms on either side of the flow that must not lean on each other; what both
# need is in the layer below (etl.base: payloads, vocabulary; etl.store.schema's telemetry facts)
APART = {
    "etl.store": ("etl.source", "etl.ingest"),
    "etl.read": ("etl.ingest",),
    "etl.act": ("etl.ingest",),
}


def test_the_store_read_and_act_do_not_reach_sideways() -> None:
    sideways = [
        f"{name} -> {target}"
        for name, path in modules().items()
        for room, others in APART.items()
        if name.startswith(room + ".")
        for target in imported(path)
        if target.startswith(others)
    ]
    assert sideways == []


# the statements that write a table, and which argument names it: insert(t), update(t),
# delete(t), dialect_insert(conn, t), upsert(conn, t, ...) and the other bulk writes of
# etl.store.rows; t.insert(), t.update(), t.delete(); and text("UPDATE t ...")
BULK = ("upsert", "insert_rows", "insert_new_rows", "update_rows")
WRITES = {"insert": 0, "update": 0, "delete": 0, "dialect_insert": 1} | dict.fromkeys(BULK, 1)
WRITE_METHODS = ("insert", "update", "delete")
RAW_WRITE = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)


def written_tables(path: Path, tables: set[str]) -> set[str]:
    """The tables of the store that a module's code writes, by the statements it builds."""

    def table(node: ast.expr) -> str | None:
        name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
        return name if name in tables else None

    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            position = WRITES.get(called)
            if position is not None and len(node.args) > position:
                found.add(table(node.args[position]))
            if isinstance(func, ast.Attribute) and func.attr in WRITE_METHODS:
                found.add(table(func.value))
            if called in ("text", "exec_driver_sql"):  # SQL as text
                sql = " ".join(
                    a.value
                    for a in node.args
                    if isinstance(a, ast.Constant) and isinstance(a.value, str)
                )
                found |= {name for name in RAW_WRITE.findall(sql) if name in tables}
    return {name for name in found if name is not None}


def test_each_table_has_one_writing_module() -> None:
    """Every INSERT, UPDATE and DELETE of a table is in its owner's named functions: one module."""
    from etl.store.schema import metadata

    tables = set(metadata.tables)
    writers: dict[str, set[str]] = {name: set() for name in tables}
    for module, path in modules().items():
        if module.startswith("etl.sandbox"):  # the emulator keeps no store
            continue
        for name in written_tables(path, tables):
            writers[name].add(module)
    shared = {name: sorted(found) for name, found in writers.items() if len(found) > 1}
    assert shared == {}
    assert writers["actions"] == {"etl.act.actions"}
    assert writers["dispatch_sites"] == {"etl.store.dispatch_sites"}
