import pytest

from core.phone import is_extension, normalise


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("101", "101"),
        ("*8", "*8"),
        ("84951234567", "+74951234567"),
        ("+7 (495) 123-45-67", "+74951234567"),
        ("74951234567", "+74951234567"),
        ("0074951234567", "+74951234567"),
        ("sip:84951234567@pbx.test;user=phone", "+74951234567"),
        ("tel:+442071838750", "+442071838750"),
        ("12345678", "12345678"),
        ("anonymous", "anonymous"),
        ("", None),
        (None, None),
    ],
)
def test_normalise(raw, expected):
    assert normalise(raw, "RU") == expected


def test_one_client_whatever_the_spelling():
    spellings = ["84951234567", "+74951234567", "7 495 123 45 67", "sip:+74951234567@x"]
    assert {normalise(s, "RU") for s in spellings} == {"+74951234567"}


def test_country_decides_national_numbers():
    assert normalise("02071838750", "GB") == "+442071838750"


def test_extensions_are_short_digit_strings():
    assert is_extension("101") and is_extension("*97")
    assert not is_extension("+74951234567") and not is_extension("1234567")
