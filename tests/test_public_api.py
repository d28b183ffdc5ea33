import subprocess
import sys

import simcluster


def test_every_public_name_resolves():
    for name in simcluster.__all__:
        assert getattr(simcluster, name) is not None


def test_import_is_light():
    # The CLI and notebooks import simcluster first; heavy modules load only when used.
    code = "import sys, simcluster; print(int('pandas' in sys.modules or 'simpy' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0"
