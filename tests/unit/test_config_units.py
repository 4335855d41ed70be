"""Durations, sizes, min_free and the mode enum's seed helpers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conduitd.config import (
    MinFree,
    SyncMode,
    format_duration,
    format_size,
    parse_duration,
    parse_min_free,
    parse_size,
)

DURATION_UNITS = ("ms", "s", "m", "h", "d")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("50ms", 0.05),
        ("1500ms", 1.5),
        ("1s", 1.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("30d", 2_592_000.0),
    ],
)
def test_parse_duration_reads_every_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0s",
        "05s",
        "1",
        "s",
        "1.5s",
        "1 s",
        " 1s",
        "1s\n",
        "-1s",
        "1S",
        "1w",
        "1ms1",
    ],
)
def test_parse_duration_refuses_text_outside_the_grammar(text: str) -> None:
    with pytest.raises(
        ValueError, match=r"is not a duration; allowed: .*ms, s, m, h or d"
    ):
        parse_duration(text)


def test_parse_duration_refuses_more_than_a_century() -> None:
    assert parse_duration("36500d") == 36_500 * 86_400
    with pytest.raises(ValueError, match="too long"):
        parse_duration("36501d")
    with pytest.raises(ValueError, match="too long"):
        parse_duration("9" * 40 + "ms")


@given(st.integers(min_value=1, max_value=36_500), st.sampled_from(DURATION_UNITS))
def test_duration_round_trips_through_its_shortest_text(count: int, unit: str) -> None:
    seconds = parse_duration(f"{count}{unit}")
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert len(text) <= len(f"{count}{unit}")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.05, "50ms"), (1.5, "1500ms"), (90.0, "90s"), (3600.0, "1h"), (172_800.0, "2d")],
)
def test_format_duration_picks_the_largest_exact_unit(
    seconds: float, text: str
) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("text", "size_bytes"),
    [
        ("0", 0),
        ("123", 123),
        ("1K", 1024),
        ("512M", 512 * 2**20),
        ("20G", 20 * 2**30),
        ("2T", 2 * 2**40),
    ],
)
def test_parse_size_reads_binary_units(text: str, size_bytes: int) -> None:
    assert parse_size(text) == size_bytes


@pytest.mark.parametrize(
    "text", ["", "G", "01", "-1", "1.5G", "1k", "1KB", "1 G", "1P"]
)
def test_parse_size_refuses_text_outside_the_grammar(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a size; allowed: .*K, M, G or T"):
        parse_size(text)


def test_parse_size_refuses_more_than_sqlite_can_store() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_size("8388608T")


@given(st.integers(min_value=0, max_value=2**50))
def test_size_round_trips_through_its_shortest_text(size_bytes: int) -> None:
    assert parse_size(format_size(size_bytes)) == size_bytes


def test_min_free_as_a_size_needs_that_many_bytes_whatever_the_disk() -> None:
    min_free = parse_min_free("1G")
    assert min_free == MinFree(size_bytes=2**30)
    assert min_free.required_bytes(10 * 2**40) == 2**30
    assert str(min_free) == "1G"


@pytest.mark.parametrize(
    ("text", "total", "required"),
    [
        ("1%", 1000, 10),
        ("1%", 150, 2),
        ("2.5%", 1000, 25),
        ("0%", 1000, 0),
        ("100%", 7, 7),
    ],
)
def test_min_free_as_a_percentage_rounds_up(
    text: str, total: int, required: int
) -> None:
    assert parse_min_free(text).required_bytes(total) == required


def test_min_free_shows_a_percentage_as_written() -> None:
    assert str(parse_min_free("2.5%")) == "2.5%"


@pytest.mark.parametrize("text", ["101%", "1.234%", "%", "-1%", "1 %", "01%"])
def test_min_free_refuses_a_bad_percentage(text: str) -> None:
    with pytest.raises(ValueError, match="is not a percentage; allowed: 0% to 100%"):
        parse_min_free(text)


@pytest.mark.parametrize("text", ["", "lots", "1.5G", "1GB"])
def test_min_free_refuses_what_is_neither_size_nor_percentage(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size or a percentage"):
        parse_min_free(text)


def test_min_free_takes_exactly_one_of_bytes_or_percent() -> None:
    with pytest.raises(ValueError, match="either"):
        MinFree()
    with pytest.raises(ValueError, match="either"):
        MinFree(size_bytes=1, percent=1.0)


def test_sync_mode_round_trips_through_its_text() -> None:
    for mode in SyncMode:
        assert SyncMode.from_str(mode.as_str()) is mode


def test_sync_mode_from_str_lists_the_modes_it_knows() -> None:
    with pytest.raises(ValueError, match="allowed: mirror, bidirectional, selective"):
        SyncMode.from_str("mirrror")
