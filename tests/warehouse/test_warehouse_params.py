"""Parameter encoding: values reach ClickHouse exactly, never as SQL text."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warehouse.params import encode_param, format_datetime


def test_strings_are_escaped_for_the_escaped_text_format():
    assert encode_param("a\tb\nc\\d") == "a\\tb\\nc\\\\d"


@given(st.text(alphabet=st.sampled_from(["\\", "\n", "\t", "\r", "\0", "'", "a", "ё", "n"])
               | st.characters()))
def test_escaping_equals_escaping_each_character_on_its_own(text):
    """The escape is a few ``str.replace`` passes (backslash first); it must give what
    replacing each character on its own gives, whatever the mix of escapes."""
    one_by_one = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}
    assert encode_param(text) == "".join(one_by_one.get(c, c) for c in text)
    quoted = "".join({**one_by_one, "'": "\\'"}.get(c, c) for c in text)
    assert encode_param([text]) == f"['{quoted}']"


def test_none_is_null_and_bools_are_digits():
    assert encode_param(None) == "\\N"
    assert (encode_param(True), encode_param(False)) == ("1", "0")


def test_datetimes_are_sent_in_utc_with_milliseconds():
    moscow = timezone(timedelta(hours=3))
    assert format_datetime(datetime(2026, 1, 1, 3, 0, 0, 123456, tzinfo=moscow)) \
        == "2026-01-01 00:00:00.123"


def test_arrays_quote_their_elements():
    assert encode_param(["a", "b'c"]) == "['a', 'b\\'c']"


@pytest.mark.parametrize("value", ["x'); DROP TABLE tawag.cdrs; --", "tab\tnew\nline\\", "ё"])
def test_awkward_strings_round_trip_through_chdb(store, value):
    rows = store.query("SELECT {v:String} AS v", {"v": value})
    assert rows == [{"v": value}]


def test_typed_values_round_trip_through_chdb(store):
    ts = datetime(2026, 3, 1, 12, 30, 1, 250000, tzinfo=UTC)
    rows = store.query(
        "SELECT {ts:DateTime64(3, 'UTC')} AS ts, {xs:Array(String)} AS xs, "
        "{n:Nullable(Int32)} AS n", {"ts": ts, "xs": ["a", "b'c", "t\tn\n"], "n": None})
    assert rows == [{"ts": ts, "xs": ["a", "b'c", "t\tn\n"], "n": None}]
