"""Trace readers on the shipped samples and on malformed files."""

import csv
import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from simcluster.workload import (TraceError, read_azure, read_burstgpt, read_mooncake, read_table, read_trace,
                                 sniff_format)

TRACES = Path(__file__).resolve().parents[2] / "scenarios" / "traces"
SAMPLES = {
    "azure_llm_2023_conv.csv": "azure",
    "azure_llm_2023_code.csv": "azure",
    "mooncake_conversation.jsonl": "mooncake",
    "mooncake_synthetic.jsonl": "mooncake",
    "burstgpt_format_synthetic.csv": "burstgpt",
}


def csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", ["azure_llm_2023_conv.csv", "azure_llm_2023_code.csv"])
def test_azure_sample_matches_the_text(name):
    path = TRACES / name
    rows = csv_rows(path)
    t = read_azure(path)
    assert len(t) == len(rows) == 2000
    # Python's own datetime parser (6 fractional digits; the 7th is 0 in these files).
    stamps = [datetime.fromisoformat(r["TIMESTAMP"][:26]) for r in rows]
    expect = np.array([(s - stamps[0]).total_seconds() for s in stamps])
    np.testing.assert_allclose(t.arrival_s, expect, atol=1e-6)
    assert t.arrival_s[0] == 0.0 and np.all(np.diff(t.arrival_s) >= 0)
    assert t.prompt_tokens.tolist() == [int(r["ContextTokens"]) for r in rows]
    assert t.output_tokens.tolist() == [int(r["GeneratedTokens"]) for r in rows]
    assert t.hash_ids is None and t.source == str(path)


def test_azure_known_values():
    t = read_azure(TRACES / "azure_llm_2023_conv.csv")
    assert (t.prompt_tokens[0], t.output_tokens[0]) == (374, 44)
    assert (t.prompt_tokens[-1], t.output_tokens[-1]) == (424, 96)
    # 18:22:50.9400470 - 18:15:46.6805900
    assert t.arrival_s[-1] == pytest.approx(424.259457, abs=1e-6)
    code = read_azure(TRACES / "azure_llm_2023_code.csv")
    assert code.arrival_s[1] == pytest.approx(0.052, abs=1e-9)


@pytest.mark.parametrize("name", ["mooncake_conversation.jsonl", "mooncake_synthetic.jsonl"])
def test_mooncake_sample_matches_the_text(name):
    path = TRACES / name
    records = [json.loads(line) for line in path.read_text().splitlines()]
    t = read_mooncake(path)
    assert len(t) == len(records) == 2000
    np.testing.assert_allclose(t.arrival_s, [r["timestamp"] / 1000 for r in records])
    assert np.all(np.diff(t.arrival_s) >= 0)
    assert t.prompt_tokens.tolist() == [r["input_length"] for r in records]
    assert t.output_tokens.tolist() == [r["output_length"] for r in records]
    assert [h.tolist() for h in t.hash_ids] == [r["hash_ids"] for r in records]
    assert t.block_tokens == 512
    # One hash id per started 512-token block of the prompt.
    blocks = np.array([len(h) for h in t.hash_ids])
    np.testing.assert_array_equal(blocks, -(-t.prompt_tokens // 512))


def test_mooncake_shares_prefixes():
    t = read_mooncake(TRACES / "mooncake_conversation.jsonl")
    assert t.hash_ids[0].tolist()[:3] == [0, 1, 2]
    assert (t.prompt_tokens[0], t.output_tokens[0]) == (6758, 500)
    starts = {int(h[0]) for h in t.hash_ids}
    assert len(starts) < len(t)  # many requests share their first block


def test_burstgpt_sample_drops_failures():
    path = TRACES / "burstgpt_format_synthetic.csv"
    rows = csv_rows(path)
    ok = [r for r in rows if int(r["Response tokens"]) > 0]
    t = read_burstgpt(path)
    assert len(t) == len(ok) and len(rows) - len(ok) > 0
    assert f"dropped {len(rows) - len(ok)} failed requests" in t.source
    np.testing.assert_array_equal(t.arrival_s, [float(r["Timestamp"]) for r in ok])
    assert t.prompt_tokens.tolist() == [int(r["Request tokens"]) for r in ok]
    gpt4 = read_burstgpt(path, model="GPT-4")
    assert len(gpt4) == sum(r["Model"] == "GPT-4" for r in ok)
    api = read_burstgpt(path, model=["ChatGPT", "GPT-4"], log_type="API log")
    assert len(api) == sum(r["Log Type"] == "API log" for r in ok)
    with pytest.raises(TraceError, match="no row has model in"):
        read_burstgpt(path, model="nonexistent")


def test_burstgpt_sample_is_what_its_script_writes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_sample", TRACES / "make_burstgpt_format_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (TRACES / "burstgpt_format_synthetic.csv").read_text() == "\n".join(module.rows()) + "\n"


@pytest.mark.parametrize("name, fmt", SAMPLES.items())
def test_read_trace_sniffs_every_sample(name, fmt):
    assert sniff_format(TRACES / name) == fmt
    t = read_trace(TRACES / name)
    assert len(t) > 900 and t.name == Path(name).stem


def test_samples_stay_small():
    total = sum(p.stat().st_size for p in TRACES.iterdir() if p.is_file())
    assert total < 2 * 1024 * 1024


# --- malformed files -------------------------------------------------------------------

AZURE_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("body, words", [
    ("", "the file is empty"),
    (AZURE_HEAD, "no rows after the header"),
    (AZURE_HEAD + "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:45.0000000,3,4\n",
     "line 3: arrival time goes back"),
    (AZURE_HEAD + "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0,3x,4\n",
     "line 3 column 'ContextTokens': '3x' is not a finite number"),
    (AZURE_HEAD + "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0,3,0\n",
     "line 3 column 'GeneratedTokens'"),
    (AZURE_HEAD + "2023-11-16 18:15:46.6805900,374,44\nyesterday,3,4\n", "line 3 column 'TIMESTAMP': 'yesterday'"),
    (AZURE_HEAD + "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0,3\n", "line 3 column 'GeneratedTokens': missing"),
    (AZURE_HEAD + "2023-11-16 18:15:46.6805900,374,44\n\n2023-11-16 18:15:47.0,3,4\n", "line 3: blank line"),
    (AZURE_HEAD + "2023-11-16 18:15:46.6805900,374,44\n,5,6\n", "line 3 column 'TIMESTAMP': missing"),
    (AZURE_HEAD + "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0,3,4,9\n", "Expected 3 fields"),
    ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6805900,374\n", "line 1: missing column 'GeneratedTokens'"),
])
def test_azure_errors_name_file_line_and_column(tmp_path, body, words):
    path = write(tmp_path, "bad.csv", body)
    with pytest.raises(TraceError) as err:
        read_azure(path)
    message = str(err.value)
    assert message.startswith(str(path)) and words in message and "\n" not in message


def test_azure_2024_style_timestamps_with_offset(tmp_path):
    path = write(tmp_path, "w.csv", AZURE_HEAD + "2024-05-10 00:00:00.004000+00:00,5,6\n"
                 "2024-05-10 00:00:01.504000+00:00,7,8\n2024-05-10 01:00:00.004000+00:00,9,10\n")
    t = read_azure(path)
    np.testing.assert_allclose(t.arrival_s, [0.0, 1.5, 3600.0])


def test_burstgpt_fractional_seconds(tmp_path):
    head = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    path = write(tmp_path, "b.csv", head + "0.25,ChatGPT,10,5,15,API log\n1.5,GPT-4,3,0,3,API log\n2.75,GPT-4,4,1,5,API log\n")
    t = read_burstgpt(path)
    assert t.arrival_s.tolist() == [0.25, 2.75] and "dropped 1 failed" in t.source


def test_trailing_blank_lines_are_fine(tmp_path):
    path = write(tmp_path, "ok.csv", AZURE_HEAD + "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.6805900,3,4\n\n\n")
    t = read_azure(path)
    assert len(t) == 2 and t.arrival_s[1] == pytest.approx(1.0)


def test_sort_option_sorts_instead_of_raising(tmp_path):
    path = write(tmp_path, "u.csv", "arrival_s,prompt_tokens,output_tokens\n2.0,1,1\n1.0,2,2\n3.0,3,3\n")
    t = read_table(path, sort=True)
    assert t.arrival_s.tolist() == [1.0, 2.0, 3.0] and t.prompt_tokens.tolist() == [2, 1, 3]


def jsonl(records):
    return "".join(json.dumps(r) + "\n" for r in records)


GOOD = {"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}


@pytest.mark.parametrize("text, words", [
    ("", "the file is empty"),
    (jsonl([GOOD]) + '{"timestamp": 5, "input_length": 3\n', "line 2 column"),
    (jsonl([GOOD, GOOD]) + '{"timestamp": 9, "input_length": "many", "output_length": 5, "hash_ids": []}\n',
     "line 3 column 'input_length': 'many'"),
    (jsonl([GOOD, {"timestamp": 10, "input_length": 600, "hash_ids": [1]}]), "line 2 column 'output_length': missing"),
    (jsonl([GOOD, dict(GOOD, output_length=-1)]), "line 2 column 'output_length'"),
    (jsonl([dict(GOOD, timestamp=100), dict(GOOD, timestamp=50)]), "line 2: arrival time goes back"),
    (jsonl([GOOD]) + "\n\n" + jsonl([dict(GOOD, input_length=0)]), "line 4 column 'input_length'"),
    (jsonl([GOOD, dict(GOOD, hash_ids="abc")]), "line 2 column 'hash_ids'"),
    (jsonl([GOOD]) + "[1, 2]\n", "line 2: a JSON list"),
    (jsonl([{"timestamp": 0, "output_length": 5}]), "missing column 'input_length'"),
])
def test_mooncake_errors_name_file_line_and_column(tmp_path, text, words):
    path = write(tmp_path, "bad.jsonl", text)
    with pytest.raises(TraceError) as err:
        read_mooncake(path)
    message = str(err.value)
    assert message.startswith(str(path)) and words in message and "\n" not in message


def test_burstgpt_zero_request_tokens_is_an_error(tmp_path):
    head = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    path = write(tmp_path, "b.csv", head + "1,ChatGPT,10,5,15,API log\n2,ChatGPT,0,5,5,API log\n")
    with pytest.raises(TraceError, match=r"line 3 column 'Request tokens'"):
        read_burstgpt(path)


def test_read_table_mapping_and_units(tmp_path):
    path = write(tmp_path, "r.csv", "t_ms,in,out,extra\n1500,10,2,x\n2000,20,3,y\n4000,30,4,z\n")
    t = read_table(path, {"arrival_s": "t_ms", "prompt_tokens": "in", "output_tokens": "out"}, time_unit="ms")
    assert t.arrival_s.tolist() == [1.5, 2.0, 4.0] and t.output_tokens.tolist() == [2, 3, 4]
    z = read_table(path, {"arrival_s": "t_ms", "prompt_tokens": "in", "output_tokens": "out"}, "ms", start_at_zero=True)
    assert z.arrival_s.tolist() == [0.0, 0.5, 2.5]
    js = write(tmp_path, "r.jsonl", jsonl([{"when": "2024-05-10T00:00:00Z", "p": 5, "o": 1, "ids": [7]},
                                            {"when": "2024-05-10T00:00:02.5Z", "p": 6, "o": 2, "ids": [7, 8]}]))
    j = read_table(js, {"arrival_s": "when", "prompt_tokens": "p", "output_tokens": "o"}, "datetime", hash_ids="ids")
    assert j.arrival_s.tolist() == [0.0, 2.5] and [h.tolist() for h in j.hash_ids] == [[7], [7, 8]]


def test_read_trace_generic_formats(tmp_path):
    path = write(tmp_path, "r.csv", "t,in,out\n0.5,10,2\n1.0,20,3\n")
    mapping = {"arrival_s": "t", "prompt_tokens": "in", "output_tokens": "out"}
    for fmt in ("auto", "csv", "table"):
        assert read_trace(path, fmt, columns=mapping).prompt_tokens.tolist() == [10, 20]
    plain = write(tmp_path, "p.jsonl", jsonl([{"arrival_s": 0, "prompt_tokens": 3, "output_tokens": 4}]))
    assert sniff_format(plain) == "table" and read_trace(plain, "jsonl").output_tokens.tolist() == [4]


def test_read_table_rejects_bad_mappings(tmp_path):
    path = write(tmp_path, "r.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(TraceError, match="columns key 'arrival'"):
        read_table(path, {"arrival": "a", "prompt_tokens": "b", "output_tokens": "c"})
    with pytest.raises(TraceError, match="columns lacks key 'output_tokens'"):
        read_table(path, {"arrival_s": "a", "prompt_tokens": "b"})
    with pytest.raises(TraceError, match="missing column 'd'"):
        read_table(path, {"arrival_s": "a", "prompt_tokens": "b", "output_tokens": "d"})
    with pytest.raises(TraceError, match="time_unit 'hours'"):
        read_table(path, {"arrival_s": "a", "prompt_tokens": "b", "output_tokens": "c"}, time_unit="hours")


def test_read_trace_rejects_unknown_formats(tmp_path):
    path = write(tmp_path, "x.csv", "when,what\n1,2\n")
    with pytest.raises(TraceError, match="line 1: unknown trace format"):
        read_trace(path)
    with pytest.raises(TraceError, match="format 'parquet'"):
        read_trace(TRACES / "azure_llm_2023_code.csv", format="parquet")
    with pytest.raises(TraceError, match="cannot read the file"):
        read_trace(tmp_path / "absent.csv")


def _big_azure(path, n):
    rng = np.random.default_rng(0)
    start = np.datetime64("2023-11-16T18:00:00.000000", "us")
    stamps = start + np.cumsum(rng.integers(0, 5000, n)).astype("timedelta64[us]")
    text = np.char.add(np.datetime_as_string(stamps, unit="us"), "0")
    lines = [f"{s.replace('T', ' ')},{p},{o}" for s, p, o in zip(text, rng.integers(1, 8000, n), rng.integers(1, 900, n))]
    path.write_text(AZURE_HEAD + "\n".join(lines) + "\n")


@pytest.mark.slow
def test_a_million_rows_read_in_seconds(tmp_path):
    path = tmp_path / "big.csv"
    _big_azure(path, 1_000_000)
    begin = time.perf_counter()
    t = read_trace(path)
    assert len(t) == 1_000_000
    assert time.perf_counter() - begin < 10.0
