"""simcluster validate FILE...: check scenario files without running them."""

from __future__ import annotations

import sys

from simcluster.scenario import ScenarioError, load_scenario


def validate(args) -> int:
    failed = 0
    for path in args.files:
        try:
            load_scenario(path, args.overrides)
        except ScenarioError as err:
            print(f"simcluster: error: {err}", file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: ok")
    return 2 if failed else 0
