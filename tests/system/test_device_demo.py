"""`make demo-devices` (etl/sandbox/device_demo.py) runs whole: the simulated battery curtailed
over Modbus, metered and restored; the OpenADR VEN told of the dispatch and its cancellation, its
reading sent; every etl step a real command."""

import re
import sqlite3
import subprocess
import sys
from pathlib import Path


def actions(store: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(store) as conn:
        return conn.execute("SELECT kind, state FROM actions ORDER BY id").fetchall()


def test_the_device_demo_curtails_restores_and_sends_both_devices_readings(
    tmp_path: Path,
) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "etl.sandbox.device_demo", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stdout + ran.stderr
    out = ran.stdout
    assert "registers 100-102 now: [2, 0, 400]" in out  # remote mode, 400 steps of 0.1 kW
    assert "registers 100-102 now: [1, 0, 0]" in out
    assert "the emulator holds 2 readings of meter lkjh-bat" in out  # its kW and kWh
    assert "(active): opting in" in out and "(cancelled): acknowledged" in out
    assert re.search(r"the emulator holds [1-9]\d* readings of meter asdf-m1", out)
    for store in ("modbus.db", "openadr.db"):
        assert actions(tmp_path / store) == [("curtail", "succeeded"), ("restore", "succeeded")]
