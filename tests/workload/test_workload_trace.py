"""Trace: validation, rate and duration, rescaling and slicing."""

import numpy as np
import pytest

from simcluster.workload import Trace, TraceError


def make(arrival, prompt=None, output=None, **kw):
    n = len(arrival)
    return Trace("t", np.asarray(arrival, dtype=float), np.asarray(prompt or [100] * n),
                 np.asarray(output or [10] * n), **kw)


def test_rate_is_inverse_mean_gap():
    t = make([1.0, 1.5, 3.0, 5.0])
    assert len(t) == 4
    assert t.duration_s == pytest.approx(4.0)
    # 3 gaps over 4 s: mean gap 4/3 s.
    assert t.rate_per_s == pytest.approx(0.75)


def test_single_request_has_no_rate():
    t = make([2.0])
    assert np.isnan(t.rate_per_s) and t.duration_s == 0.0
    assert make([1.0, 1.0]).rate_per_s == float("inf")


def test_arrays_are_typed_and_read_only():
    t = make([0, 1, 2], [5, 6, 7], [1, 2, 3])
    assert t.arrival_s.dtype == np.float64 and t.prompt_tokens.dtype == np.int64
    with pytest.raises(ValueError):
        t.prompt_tokens[0] = 3


@pytest.mark.parametrize("kwargs, words", [
    (dict(arrival=[]), "empty"),
    (dict(arrival=[0.0, 2.0, 1.0]), "row 2 column 'arrival_s'"),
    (dict(arrival=[-1.0, 2.0]), "row 0 column 'arrival_s'"),
    (dict(arrival=[0.0, np.nan]), "row 1 column 'arrival_s'"),
    (dict(arrival=[0.0, 1.0], prompt=[3, 0]), "row 1 column 'prompt_tokens'"),
    (dict(arrival=[0.0, 1.0], output=[-2, 5]), "row 0 column 'output_tokens'"),
    (dict(arrival=[0.0, 1.0], output=[2.5, 5.0]), "row 0 column 'output_tokens'"),
    (dict(arrival=[0.0, 1.0], output=[np.nan, 5.0]), "row 0 column 'output_tokens'"),
    (dict(arrival=[0.0, 1.0], prompt=[1, 2, 3]), "'prompt_tokens' has 3 rows; expected 2"),
])
def test_bad_rows_name_row_and_column(kwargs, words):
    with pytest.raises(TraceError) as err:
        make(**kwargs)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_error_names_the_file():
    with pytest.raises(TraceError, match=r"^/data/x\.csv: row 1 column 'arrival_s'"):
        make([3.0, 1.0], source="/data/x.csv")


def test_hash_ids_length_must_match():
    with pytest.raises(TraceError, match="'hash_ids' has 1 rows; expected 2"):
        make([0.0, 1.0], hash_ids=(np.array([1, 2]),))


def test_rescale_rate_scales_gaps_and_keeps_order():
    rng = np.random.default_rng(3)
    arrival = 5.0 + np.cumsum(rng.exponential(0.5, 200))
    t = make(list(arrival), list(rng.integers(1, 100, 200)), list(rng.integers(1, 100, 200)))
    fast = t.rescale_rate(20.0)
    assert fast.rate_per_s == pytest.approx(20.0, rel=1e-12)
    assert fast.arrival_s[0] == t.arrival_s[0]
    gaps, new_gaps = np.diff(t.arrival_s), np.diff(fast.arrival_s)
    # Every gap shrinks by the same factor, so the burstiness (gap cv) is kept.
    np.testing.assert_allclose(new_gaps / gaps, t.rate_per_s / 20.0, rtol=1e-9)
    np.testing.assert_array_equal(fast.prompt_tokens, t.prompt_tokens)
    np.testing.assert_array_equal(fast.output_tokens, t.output_tokens)
    assert np.std(new_gaps) / np.mean(new_gaps) == pytest.approx(np.std(gaps) / np.mean(gaps))


def test_rescale_rejects_bad_targets():
    t = make([0.0, 1.0, 2.0])
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(TraceError, match="target_rate_per_s"):
            t.rescale_rate(bad)
    with pytest.raises(TraceError, match="at least two distinct"):
        make([1.0, 1.0]).rescale_rate(2.0)


def test_slice_time_is_half_open_and_shifted():
    t = make([0.0, 1.0, 2.0, 3.0, 4.0], [1, 2, 3, 4, 5],
             hash_ids=tuple(np.array([i]) for i in range(5)))
    s = t.slice_time(1.0, 3.0)
    np.testing.assert_array_equal(s.arrival_s, [0.0, 1.0])
    np.testing.assert_array_equal(s.prompt_tokens, [2, 3])
    assert [h.tolist() for h in s.hash_ids] == [[1], [2]]
    with pytest.raises(TraceError, match="no request arrives"):
        t.slice_time(10.0, 20.0)


def test_head_and_frame():
    t = make([0.0, 1.0, 2.0], [4, 5, 6], [7, 8, 9], hash_ids=(np.array([1]), np.array([1, 2]), np.array([3])))
    h = t.head(2)
    assert len(h) == 2 and h.prompt_tokens.tolist() == [4, 5]
    frame = t.to_frame()
    assert list(frame.columns) == ["arrival_s", "prompt_tokens", "output_tokens", "hash_ids"]
    assert frame["hash_ids"].iloc[1] == [1, 2] and frame["output_tokens"].sum() == 24
    with pytest.raises(TraceError):
        t.head(0)
