"""calibrate/engine's warm-up burst (--prewarm): pure logic, no GPU or transformers."""

import numpy as np

from calibrate.engine import WARM_SWEEPS, graphs_captured, main, warmup_burst


def test_warmup_burst_covers_every_padded_prompt_length_in_each_sweep():
    arrival, prompts, outputs = warmup_burst(2048, 256)
    assert np.all(np.diff(arrival) >= 0)          # in arrival order, as Engine.serve submits them
    assert max(prompts) <= 2048 and max(outputs) <= 256
    i = 0
    for n_bg, bg_prompt, bg_output, top, copies_small, copies in WARM_SWEEPS:
        assert prompts[i:i + n_bg] == [bg_prompt] * n_bg and outputs[i:i + n_bg] == [bg_output] * n_bg
        i += n_bg
        # Each prompt leaves room for 16 decodes beside it in the same padded query size.
        want = [n - 16 for n in range(64, top + 1, 64) for _ in range(copies_small if n <= 512 else copies)]
        assert prompts[i:i + len(want)] == want
        if n_bg == 0:   # alternate output lengths put an idle engine's copies on alternate IO pairs
            assert outputs[i:i + 2] == [5, 4]
        i += len(want)
    assert i == len(prompts)
    assert arrival[-1] < 35.0


def test_graphs_captured_sums_graph_sets_only():
    counts = {"model_runner.graph_pool_id": 2, "model_runner.use_cuda_graph_decode": True,
              "io_pairs[0].device_io.graphs._storage": 23, "io_pairs[1].device_io.graphs._storage": 19}
    assert graphs_captured(counts) == 42
    assert graphs_captured({"inputs_and_outputs.graphs._storage": 5}) == 5


def test_prewarm_flag_is_offered(capsys):
    try:
        main(["--help"])
    except SystemExit:
        pass
    assert "--prewarm" in capsys.readouterr().out
