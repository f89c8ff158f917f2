"""The help a person reads: every command's at 80 columns with nothing cut, every value's
metavar meaningful, and the README's configuration table naming every environment variable an
option reads; the processor's options where an operator types them, what the shell completes,
and each command's summary in its own help and in the docs."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from etl.cli import app
from tests.docs import all_pages, page
from tests.processes import in_process

README = page("operations.md")
# what a metavar says about the value: a word in capitals, or a choice of words
MEANINGFUL = re.compile(
    r"[A-Z][A-Z0-9_]*(\.[a-z]+)?([:,|]([A-Z][A-Z0-9_]*|-))*(\.\.\.)?|<[a-z-]+(\|[a-z-]+)+>"
)
# read by etl but no option's: the log's shape, and the secrets' files
NOT_OPTIONS = {"ETL_LOG_FORMAT"}


def commands() -> Iterator[tuple[list[str], Any]]:
    def walk(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


COMMANDS = [" ".join(path) for path, _ in commands()]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_at_80_columns_cuts_nothing(command: str) -> None:
    shown = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    described = [line for line in lines if not line.startswith("Usage:")]  # ARGS... is syntax
    assert not any(line.rstrip().endswith(("...", "…")) for line in described), shown.output
    for hidden in ("<str>", "<float>", "<int>", "<parse>", "<boolean>", "TEXT", "FLOAT", "{kind}"):
        assert hidden not in shown.output, (command, hidden)
    for name in re.findall(r"env var:\s+([A-Z_]+)", shown.output.replace("\n", " ")):
        assert name in option_envvars(), name  # whole, never cut


@pytest.mark.parametrize("command", COMMANDS)
def test_every_value_has_a_metavar_that_says_what_it_is(command: str) -> None:
    (found,) = [c for path, c in commands() if " ".join(path) == command]
    context = typer.main.get_command(app).make_context("etl", ["--help"], resilient_parsing=True)
    for param in found.params:
        if getattr(param, "is_flag", False) or param.name == "help":
            continue
        metavar = param.make_metavar(context)
        assert MEANINGFUL.fullmatch(metavar), (command, param.name, metavar)


def option_envvars() -> set[str]:
    return {
        name
        for _, command in commands()
        for param in command.params
        for name in ([param.envvar] if isinstance(param.envvar, str) else param.envvar or [])
    }


def test_the_readme_table_names_every_environment_variable_of_an_option() -> None:
    table = README.split("## Configuration")[1].split("\n## ")[0]
    named = {
        name
        for row in table.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split(" | ")[0])
    }
    options = option_envvars()
    assert options <= named, options - named
    files = {name for name in named if name.endswith("_FILE")}
    assert named - options - files == NOT_OPTIONS
    assert {name.removesuffix("_FILE") for name in files} <= options  # each a secret's file


def test_the_processor_options_are_taken_after_the_commands_that_act_too() -> None:
    """`etl run --workers 8`, as an operator types it, as well as `etl --workers 8 run`; `etl
    process` sends no notification, so takes no notification option."""
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)  # an app of several commands
    before = {param.name for param in root.params if param.expose_value} - {"version"}
    notify = {"notify_urls", "notify_test"}
    assert notify < before
    after = {name: {param.name for param in c.params} for name, c in root.commands.items()}
    assert {name for name, taken in after.items() if before <= taken} == {"run", "serve"}
    acting = {name for name, taken in after.items() if before - notify <= taken}
    assert acting == {"process", "run", "serve"}


def complete(*words: str) -> list[str]:
    """What the shell offers for the last word, asked as bash asks once `etl
    --install-completion` has put etl's script in place."""
    env = {"_ETL_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(["etl", *words])}
    env["COMP_CWORD"] = str(len(words))
    done = CliRunner().invoke(app, [], env=env, prog_name="etl")
    assert done.exit_code == 0, done.output
    return done.output.split()


def test_the_shell_completes_the_formats_and_the_time_zones() -> None:
    formats = ["table", "csv", "json", "jsonl", "ics"]
    assert complete("report", "dispatches", "--format", "") == formats
    assert complete("report", "--format", "j") == ["json", "jsonl"]
    assert complete("status", "--format", "") == ["text", "json", "prometheus"]
    assert complete("report", "sites", "--tz", "")[:3] == ["utc", "local", "program"]
    assert "America/Chicago" in complete("report", "sites", "--tz", "")
    assert complete("audit", "--tz", "America/Ch") == ["America/Chicago", "America/Chihuahua"]
    assert complete("audit", "--tz", "pro") == ["program"]


def summaries() -> list[tuple[str, str]]:
    """Each command's name and the first line of its docstring."""
    found: list[tuple[str, str | None]] = []
    for info in app.registered_commands:
        assert info.callback is not None  # each registered by its function
        found.append((info.name or info.callback.__name__, info.callback.__doc__))
    for group in app.registered_groups:
        assert group.typer_instance is not None  # each added as a Typer of its own
        found += [
            (f"{group.name} {c.name}", c.callback.__doc__)
            for c in group.typer_instance.registered_commands
        ]
    firsts = []
    for name, doc in found:
        assert doc is not None, f"{name} has no docstring"
        firsts.append((name, doc.splitlines()[0]))
    return firsts


@pytest.mark.parametrize(("command", "summary"), summaries())
def test_every_command_has_help_and_is_in_the_readme(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    summary: str,
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = in_process(monkeypatch, capsys, url, *command.split(), "--help")
    assert result.returncode == 0 and len(summary) > 20
    assert " ".join(summary.split()) in " ".join(result.stdout.split())
    assert f"etl {command}" in all_pages()
