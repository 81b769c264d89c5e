"""_convert builds the same arrays as pa.array, by a route that does not import pandas."""

from __future__ import annotations

import math

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from prtip_nb.results import _convert as cv

DICT = pa.dictionary(pa.int32(), pa.string())
TS = pa.timestamp("us", tz="UTC")

texts = st.lists(st.one_of(st.none(), st.text(max_size=12)), max_size=200)
words = st.lists(st.sampled_from(["open", "closed", "filtered", "", "é\nx"]), max_size=200)


def same(values: list[object], typ: pa.DataType) -> None:
    got = cv.column(values, typ)
    got.validate(full=True)
    assert got.type == typ
    # from_pandas=True: NaN is null, as _convert makes it (an RTT cannot be NaN).
    expected = pa.array(values, typ, from_pandas=True)
    assert got.to_pylist() == expected.to_pylist()
    assert got.null_count == expected.null_count


@settings(max_examples=60, deadline=None)
@given(texts)
def test_strings(values: list[str | None]) -> None:
    same(values, pa.string())
    same(values * 40, pa.string())  # long enough for the join/split route


@settings(max_examples=40, deadline=None)
@given(words)
def test_dictionary_strings(values: list[str]) -> None:
    same(values * 10, DICT)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(
        [
            (pa.uint8(), st.integers(0, 255)),
            (pa.uint16(), st.integers(0, 65535)),
            (pa.uint32(), st.integers(0, 2**32 - 1)),
            (pa.uint64(), st.integers(0, 2**64 - 1)),
            (pa.int64(), st.integers(-(2**63) + 1, 2**63 - 1)),
            (TS, st.integers(0, 4_102_444_800_000_000)),  # to 2100: to_pylist stops at 9999
        ]
    ).flatmap(lambda ts: st.tuples(st.just(ts[0]), st.lists(st.one_of(st.none(), ts[1]))))
)
def test_integers(case: tuple[pa.DataType, list[int | None]]) -> None:
    typ, values = case
    same(values, typ)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(width=32, allow_infinity=False))))
def test_floats(values: list[float | None]) -> None:
    same(values, pa.float32())
    same(values, pa.float64())
    assert cv.column([math.nan], pa.float32()).null_count == 1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), st.booleans())))
def test_bools(values: list[bool | None]) -> None:
    same(values, pa.bool_())


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(st.text(max_size=5), max_size=3))))
def test_string_lists(values: list[list[str] | None]) -> None:
    same(values, pa.list_(pa.string()))


def test_out_of_range_raises_rather_than_wraps() -> None:
    for values in ([300], [300, None]):
        try:
            cv.column(values, pa.uint8())
        except (OverflowError, pa.ArrowInvalid):
            continue
        raise AssertionError(f"{values} became uint8 silently")
