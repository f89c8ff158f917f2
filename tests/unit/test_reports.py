"""The docs' SQL examples, which tests/store/test_reports.py runs one by one against a store:
there are some to run (a page that lost its examples would leave that test with none)."""

from tests.docs import sql_examples


def test_the_readme_has_sql_examples() -> None:
    assert len(sql_examples()) >= 5
