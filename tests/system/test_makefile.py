"""The README's first commands and the other make targets it names exist and say what they run
(`make -n`: printed, not run)."""

import re
import subprocess
from pathlib import Path

from tests.docs import all_pages

ROOT = Path(__file__).parents[2]


def test_every_make_target_the_docs_name_is_in_the_makefile() -> None:
    named = set(re.findall(r"(?:`|^)make ([a-z][a-z-]+)", all_pages(), re.MULTILINE))
    assert {"demo", "test", "test-fast", "console", "demo-push"} <= named
    for target in sorted(named):
        planned = subprocess.run(
            ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert planned.returncode == 0, (target, planned.stderr)
        if target != "setup":  # up to date once the venv is made; the others always run
            assert "Nothing to be done" not in planned.stdout + planned.stderr, target
    readme = (ROOT / "README.md").read_text().split("```")[1]
    assert readme.splitlines()[1].startswith("make demo ")
    assert readme.splitlines()[2].startswith("make test ")
