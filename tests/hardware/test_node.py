"""The node catalog and its loader."""

import shutil

import pytest

from simcluster.catalog import CatalogError, profiles_dir
from simcluster.hardware import INTER_NODE_KINDS, INTRA_NODE_KINDS, default_node_for, gpu_names, load_node, node_names

EXPECTED = {"dgx-h100", "hgx-h200", "dgx-a100", "a100-40gb-8x", "dgx-b200", "mi300x-8x", "h100-pcie-8x",
            "l40s-8x", "l4-8x", "a10g-4x"}


def test_catalog_holds_the_expected_nodes():
    assert EXPECTED <= set(node_names())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_node_loads_and_is_consistent_with_its_gpu(name):
    node = load_node(name)
    assert node.name == name and node.sources
    assert node.intra_node_kind in INTRA_NODE_KINDS and node.inter_node_kind in INTER_NODE_KINDS
    gpu = node.gpu_spec()
    # The node's GPU-to-GPU fabric is the GPU's own intra-node link.
    assert node.intra_node_bandwidth_bytes_per_s == gpu.intra_node_bandwidth_bytes_per_s
    assert node.host_to_device_bandwidth_bytes_per_s == gpu.pcie_bandwidth_bytes_per_s
    # Leaving the node is slower than staying in it, and costs more latency.
    assert node.nic_bandwidth_bytes_per_s <= node.intra_node_bandwidth_bytes_per_s
    assert node.inter_node_latency_s > node.intra_node_latency_s
    # Host memory holds at least the GPUs' memory (needed for checkpoint and offload staging).
    assert node.host_memory_bytes >= node.gpus_per_node * gpu.memory_bytes * 0.9


def test_datasheet_facts_of_named_systems():
    dgx = load_node("dgx-h100")
    assert (dgx.gpu, dgx.gpus_per_node, dgx.intra_node_kind, dgx.inter_node_kind) == \
        ("h100-sxm", 8, "nvswitch", "infiniband")
    assert dgx.nic_bandwidth_per_node_bytes_per_s == 8 * 400e9 / 8        # 8 x 400 Gb/s
    assert load_node("dgx-a100").nic_bandwidth_bytes_per_s == 200e9 / 8
    assert load_node("dgx-b200").intra_node_bandwidth_bytes_per_s == 1.8e12 / 2
    assert load_node("mi300x-8x").intra_node_kind == "infinity-fabric"
    g5 = load_node("a10g-4x")
    assert (g5.gpus_per_node, g5.nics_per_node, g5.nic_bandwidth_bytes_per_s) == (4, 1, 40e9 / 8)
    assert g5.host_memory_bytes == 192 * 2**30


@pytest.mark.parametrize("gpu", ["h100-sxm", "h100-pcie", "h200-sxm", "a100-sxm-80gb", "a100-sxm-40gb", "l40s",
                                 "l4", "a10g", "b200", "mi300x"])
def test_every_catalog_gpu_has_a_default_node(gpu):
    assert gpu in gpu_names()
    node = default_node_for(gpu)
    assert node.gpu == gpu and node.default_for_gpu


def test_default_nodes_by_name():
    assert default_node_for("h100-sxm").name == "dgx-h100"
    assert default_node_for("a100-sxm-80gb").name == "dgx-a100"
    assert default_node_for("a10g").name == "a10g-4x"


def test_unknown_node_lists_the_known_ones():
    with pytest.raises(CatalogError) as err:
        load_node("dgx-z9")
    msg = str(err.value)
    assert "dgx-z9" in msg and "dgx-h100" in msg and "\n" not in msg


def test_default_node_for_a_gpu_without_nodes():
    with pytest.raises(CatalogError, match="no node in the catalog holds GPU 'tpu-v5'"):
        default_node_for("tpu-v5")


@pytest.fixture
def profiles_copy(tmp_path, monkeypatch):
    """A private copy of profiles/ that a test may break."""
    dst = tmp_path / "profiles"
    shutil.copytree(profiles_dir() / "gpus", dst / "gpus")
    shutil.copytree(profiles_dir() / "nodes", dst / "nodes")
    monkeypatch.setenv("SIMCLUSTER_PROFILES", str(dst))
    return dst


def _write_variant(profiles, drop=None, **changes):
    text = (profiles / "nodes" / "dgx-h100.yaml").read_text().splitlines()
    out = []
    for line in text:
        key = line.split(":", 1)[0]
        if key == drop:
            continue
        if key in changes:
            line = f"{key}: {changes[key]}"
        out.append(line)
    (profiles / "nodes" / "broken.yaml").write_text("\n".join(out).replace("name: dgx-h100", "name: broken") + "\n")


def test_missing_key_names_file_and_key(profiles_copy):
    _write_variant(profiles_copy, drop="nics_per_node")
    with pytest.raises(CatalogError) as err:
        load_node("broken")
    assert "broken.yaml" in str(err.value) and "'nics_per_node'" in str(err.value)


@pytest.mark.parametrize("changes,key", [
    ({"intra_node_kind": "carrier-pigeon"}, "intra_node_kind"),
    ({"inter_node_kind": "nvlink"}, "inter_node_kind"),
    ({"gpu": "h900"}, "gpu"),
    ({"gpus_per_node": "eight"}, "gpus_per_node"),
    ({"nic_bandwidth_bytes_per_s": "-1"}, "nic_bandwidth_bytes_per_s"),
    ({"inter_node_latency_s": "-1e-6"}, "inter_node_latency_s"),
])
def test_bad_values_name_file_and_key(profiles_copy, changes, key):
    _write_variant(profiles_copy, **changes)
    with pytest.raises(CatalogError) as err:
        load_node("broken")
    msg = str(err.value)
    assert "broken.yaml" in msg and repr(key) in msg and "\n" not in msg
