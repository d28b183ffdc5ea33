"""calibrate/engine's warm-up burst (--prewarm): pure logic, no GPU or transformers."""

import numpy as np

from calibrate.engine import WARM_BACKGROUND, WARM_STEP_TOKENS, graphs_captured, main, warmup_burst


def test_warmup_burst_covers_every_padded_prompt_length_twice_idle_and_twice_loaded():
    arrival, prompts, outputs = warmup_burst(2048, 256)
    lengths = list(range(WARM_STEP_TOKENS, 2049, WARM_STEP_TOKENS))
    assert len(lengths) == 32
    n = 2 * len(lengths)
    assert prompts[:n] == prompts[n + WARM_BACKGROUND:] == [x for x in lengths for _ in range(2)]
    assert prompts[n:n + WARM_BACKGROUND] == [2048] * WARM_BACKGROUND
    assert outputs[n:n + WARM_BACKGROUND] == [256] * WARM_BACKGROUND
    assert np.all(np.diff(arrival) >= 0)          # in arrival order, as Engine.serve submits them
    # The long requests still decode when the second sweep ends (34 ms a decode iteration).
    assert arrival[n] + 256 * 0.034 > arrival[-1]
    assert arrival[-1] < 20.0


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
