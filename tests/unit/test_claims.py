"""What an attempt's record keeps of what a handler said: anything a database can store, the
same on both, its secrets masked, its end when it is long. (The attempts themselves:
tests/store/test_processor.py and test_handler_faults.py.)"""

from hypothesis import given
from hypothesis import strategies as st

from etl.act.claims import kept
from etl.handlers import KEPT_OUTPUT_CHARS

ANY_TEXT = st.text(st.one_of(st.characters(), st.sampled_from(["\x00", "\ud800", "\udfff"])))


@given(ANY_TEXT)
def test_whatever_a_handler_says_its_record_can_be_stored_on_either_database(said: str) -> None:
    record = kept(said)
    assert "\x00" not in record and len(record) <= KEPT_OUTPUT_CHARS
    record.encode("utf-8")  # no lone surrogate: PostgreSQL and SQLite take it alike
    if said.isascii() and not set(said) & set("\x00?&;#/") and len(said) <= KEPT_OUTPUT_CHARS:
        assert record == said  # what needs nothing done is kept as it is


def test_nul_and_lone_surrogates_are_escaped_and_a_urls_credentials_masked() -> None:
    said = "relay\x00 down \udc80: POST https://u:pw-s3cret@ctl.example/x?token=t0k failed"
    assert kept(said) == (
        "relay\\x00 down \\udc80: POST https://***@ctl.example/x?token=*** failed"
    )


def test_of_a_long_output_its_end_is_kept() -> None:
    said = "start " + "." * 10_000 + " the error at the end"
    assert kept(said) == said[-KEPT_OUTPUT_CHARS:] and kept(said).endswith("the error at the end")
