import json

import numpy as np

from simcluster.cli import main
from simcluster.optimize.expert_loads import generate_loads, write_loads_csv


def test_place_experts_json_conventions_and_ilp_not_worse(tmp_path, capsys):
    path = tmp_path / "loads.csv"
    write_loads_csv(path, generate_loads(2, 16, 4096, 0.8, 0))
    common = ["place-experts", "--loads", str(path), "--nodes", "2", "--gpus", "8", "--slots", "24", "--json"]
    assert main(common + ["--policy", "eplb-global"]) == 0
    eplb = json.loads(capsys.readouterr().out)
    assert main(common + ["--policy", "ilp", "--time-limit", "4", "--max-steps", "5"]) == 0
    ilp = json.loads(capsys.readouterr().out)
    for r in (eplb, ilp):
        phy2log = np.array(r["phy2log"])
        logcnt = np.array(r["logcnt"])
        assert phy2log.shape == (2, 24)
        for layer in range(2):
            assert np.bincount(phy2log[layer], minlength=16).tolist() == logcnt[layer].tolist()
        assert len(r["gpu_loads"][0]) == 8
    assert ilp["summary"]["min_balancedness"] >= eplb["summary"]["min_balancedness"] - 1e-12
    assert all(rec["status"] and rec["solve_time_s"] >= 0 for rec in ilp["layers"])


def test_place_experts_generate_and_bad_input(tmp_path, capsys):
    assert main(["place-experts", "--generate", "2x16", "--nodes", "2", "--gpus", "8", "--slots", "16",
                 "--policy", "eplb-hierarchical", "--groups", "4"]) == 0
    assert "balancedness" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,x\n")
    assert main(["place-experts", "--loads", str(bad), "--nodes", "1", "--gpus", "2", "--slots", "4"]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "Traceback" not in err
    assert main(["place-experts", "--generate", "2x16", "--nodes", "3", "--gpus", "8", "--slots", "16"]) == 2
