"""The OpenADR mapping file: what it maps, and each hostile file refused in one line that names
the file and the entry at fault."""

import os
from pathlib import Path

import pytest

from etl.base.errors import ConfigError
from etl.devices.mapping_file import MOST_BYTES
from etl.devices.openadr_mapping import DEFAULT_MARKET_CONTEXT, MappedSite, load_mapping

GOOD = """
market_context = "oadr://voltus/east"
vens = ["thermostats", "chillers"]

[[sites]]
site_id = "s1"
ven = "thermostats"
resources = ["zone-1", "zone-2"]

[[sites]]
site_id = "s2"
ven = "thermostats"
resources = ["zone-3"]
meter_id = "s2-m"

[[sites]]
site_id = "s3"
ven = "chillers"
"""


def written(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "openadr.toml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def refused(tmp_path: Path, text: str | bytes) -> str:
    with pytest.raises(ConfigError) as caught:
        load_mapping(written(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"OpenADR mapping {tmp_path}")
    return message


def test_a_mapping_gives_each_site_its_ven_resources_and_meter(tmp_path: Path) -> None:
    mapping = load_mapping(written(tmp_path, GOOD))
    assert mapping.vens == {"thermostats", "chillers"}
    assert mapping.market_context == "oadr://voltus/east"
    assert mapping.sites == {
        "s1": MappedSite("s1", "thermostats", ("zone-1", "zone-2"), None),
        "s2": MappedSite("s2", "thermostats", ("zone-3",), "s2-m"),
        "s3": MappedSite("s3", "chillers", None, None),
    }
    # a report is its resource's site's, or the whole VEN's site's
    assert mapping.site_reported("thermostats", "zone-3") == mapping.sites["s2"]
    assert mapping.site_reported("chillers", "anything") == mapping.sites["s3"]
    assert mapping.site_reported("thermostats", "zone-9") is None
    assert mapping.site_reported("stranger", "zone-1") is None


def test_the_market_context_has_a_default(tmp_path: Path) -> None:
    text = 'vens = ["v"]\n[[sites]]\nsite_id = "s"\nven = "v"\n'
    assert load_mapping(written(tmp_path, text)).market_context == DEFAULT_MARKET_CONTEXT


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('vens = ["v"\n', "not TOML: "),
        ("vens = [1]\n", "vens[1] is not text"),
        ("vens = []\n", "vens lists no VEN"),
        ('vens = ["v", "v"]\n[[sites]]\nsite_id = "s"\nven = "v"\n', "vens: 'v' is listed twice"),
        ('vens = ["v"]\n', "no [[sites]]"),
        ('vens = ["v"]\nsites = "s1"\n', "no [[sites]]"),
        ('vens = ["v"]\nsites = [1]\n', "sites[1] is not a table"),
        ('vens = ["v"]\nvtns = ["x"]\n', "unknown key vtns"),
        ('vens = ["v"]\n[[sites]]\nven = "v"\n', "sites[1].site_id is missing"),
        ('vens = ["v"]\n[[sites]]\nsite_id = 7\nven = "v"\n', "sites[1].site_id is not text"),
        ('vens = ["v"]\n[[sites]]\nsite_id = "s"\nven = "w"\n', "sites[1].ven: 'w' is not one"),
        (
            'vens = ["v"]\n[[sites]]\nsite_id = "s"\nven = "v"\ncolour = "red"\n',
            "unknown key sites[1].colour",
        ),
        (
            'vens = ["v"]\n[[sites]]\nsite_id = "s"\nven = "v"\n'
            '[[sites]]\nsite_id = "s"\nven = "v"\n',
            "sites[2]: site 's' is mapped twice",
        ),
        (
            'vens = ["v"]\n[[sites]]\nsite_id = "a"\nven = "v"\n'
            '[[sites]]\nsite_id = "b"\nven = "v"\nresources = ["r"]\n',
            "sites[2]: VEN 'v' also serves site 'a'",
        ),
        (
            'vens = ["v"]\n[[sites]]\nsite_id = "a"\nven = "v"\nresources = ["r", "q"]\n'
            '[[sites]]\nsite_id = "b"\nven = "v"\nresources = ["q"]\n',
            "sites[2]: resource 'q' of VEN 'v' is site 'a''s already",
        ),
        (
            'vens = ["v"]\n[[sites]]\nsite_id = "s"\nven = "v"\nresources = []\n',
            "sites[1].resources is empty",
        ),
        (
            'vens = ["v"]\n[[sites]]\nsite_id = "s"\nven = "v"\nresources = "r"\n',
            "sites[1].resources is not a list",
        ),
        (
            'market_context = "voltus"\nvens = ["v"]\n[[sites]]\nsite_id = "s"\nven = "v"\n',
            "market_context 'voltus' is not a URI",
        ),
    ],
)
def test_a_faulty_mapping_is_refused_in_one_line(tmp_path: Path, text: str, said: str) -> None:
    assert said in refused(tmp_path, text)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"none\.toml: No such file or directory$"):
        load_mapping(tmp_path / "none.toml")


def test_control_characters_are_refused_and_not_echoed(tmp_path: Path) -> None:
    text = 'vens = ["v\\u001b[31m"]\n[[sites]]\nsite_id = "s"\nven = "v"\n'
    message = refused(tmp_path, text)
    assert "has control characters" in message and "\x1b" not in message
    spaced = 'vens = ["v"]\n[[sites]]\nsite_id = " s"\nven = "v"\n'
    assert "sites[1].site_id ' s' is blank or has spaces around it" in refused(tmp_path, spaced)


def test_huge_values_are_refused(tmp_path: Path) -> None:
    long_id = "x" * 201
    text = f'vens = ["{long_id}"]\n'
    assert "vens[1] is longer than 200 characters" in refused(tmp_path, text)
    many = ", ".join(f'"r{n}"' for n in range(101))
    text = f'vens = ["v"]\n[[sites]]\nsite_id = "s"\nven = "v"\nresources = [{many}]\n'
    assert "sites[1].resources: more than 100" in refused(tmp_path, text)
    padding = "# " + "x" * MOST_BYTES + "\n"
    assert "is over 1024 KiB: not a mapping file" in refused(tmp_path, padding)
    assert "vens[1] is not text" in refused(tmp_path, "vens = [1e400]\n")  # inf, no id


def test_bytes_that_are_not_utf8_are_refused(tmp_path: Path) -> None:
    assert "not UTF-8 text" in refused(tmp_path, b'vens = ["\xff"]\n')


def test_a_fifo_and_hostile_toml_are_one_line_errors(tmp_path: Path) -> None:
    """Read as the Modbus mapping is (etl.devices.mapping_file): a FIFO would block the start,
    and Python's own limits would show as tracebacks."""
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"^cannot read OpenADR mapping .*: not a regular file$"):
        load_mapping(fifo)
    assert "not TOML: " in refused(tmp_path, "vens = [" + "9" * 5000 + "]\n")
    assert "not TOML: nested too deep" in refused(tmp_path, "x = " + "[" * 5000 + "]" * 5000)
