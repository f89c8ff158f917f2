"""The documentation the tests hold to the code: the README and the pages of docs/."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def page(name: str) -> str:
    """One page: `README.md` or a file of docs/ (`operations.md`)."""
    return (ROOT / name if name == "README.md" else ROOT / "docs" / name).read_text()


def all_pages() -> str:
    return "\n".join(path.read_text() for path in PAGES)


def sql_examples() -> list[str]:
    """The SQL examples of the pages, each a query a person may run against the store."""
    return re.findall(r"```sql\n(.*?)```", all_pages(), flags=re.DOTALL)
