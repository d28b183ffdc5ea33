"""Command line: parsing only. One function per subcommand, each returning an exit code.

Exit codes: 0 success; 1 the question has no answer (e.g. no plan meets the SLO); 2 bad input.
"""

from __future__ import annotations

import argparse
import sys

from simcluster import commands
from simcluster.commands.arguments import batch_shape as _batch, positive_float as _positive_float, positive_int as _positive_int

EPILOG_PLAN = """examples:
  simcluster plan scenarios/serve-llama8b-chat.yaml
  simcluster plan scenarios/serve-llama8b-chat.yaml --set workload.synthetic.rate_per_s=20 --json
  simcluster plan scenarios/plan-llama70b-serving.yaml --objective max_goodput_per_usd --cache .plan-cache --out out/70b
  simcluster plan scenarios/plan-llama405b-training.yaml --backend ray --address auto
"""
EPILOG_SIMULATE = """examples:
  simcluster simulate scenarios/serve-llama8b-chat.yaml --out out/chat
  simcluster simulate scenarios/serve-llama8b-chat.yaml --set serving.replicas.0.count=4 --json
"""
EPILOG_VALIDATE = """examples:
  simcluster validate scenarios/*.yaml
"""
EPILOG_ESTIMATE = """examples:
  simcluster estimate step --gpu h100-sxm --llm llama-3.1-8b --tp 1 --prefill 1x2048 --decode 64x1024 --cuda-graphs --json
  simcluster estimate step --gpu h200-sxm --llm deepseek-v3 --tp 8 --decode 128x4096 --dtype fp8
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simcluster", description="Simulate and plan LLM serving and training on GPU clusters.",
                                epilog="exit codes: 0 ok, 1 no feasible answer, 2 bad input",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def scenario_cmd(name, help_, epilog):
        c = sub.add_parser(name, help=help_, description=help_, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        c.add_argument("scenario", help="YAML scenario file")
        c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                       help="override a scenario value (repeatable), e.g. slo.ttft_s=0.5")
        c.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
        c.add_argument("--out", metavar="DIR", help="write results into DIR")
        return c

    pl = scenario_cmd("plan", "search deployments for a scenario and rank them", EPILOG_PLAN)
    pl.add_argument("--objective", choices=["min_cost", "max_goodput_per_usd"], default=None,
                    help="serving: least USD/hour for the target rate, or most goodput per USD (default: the scenario's)")
    pl.add_argument("--backend", choices=["local", "ray"], default="local",
                    help="run sweeps in a local process pool (default) or on a Ray cluster")
    pl.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")
    pl.add_argument("--workers", type=_positive_int, default=None, help="processes (default: one per CPU)")
    pl.add_argument("--cache", metavar="DIR", default=None,
                    help="cache results in DIR so a repeated or interrupted search resumes")
    scenario_cmd("simulate", "simulate the deployment a scenario describes", EPILOG_SIMULATE)

    v = sub.add_parser("validate", help="check scenario files", epilog=EPILOG_VALIDATE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("files", nargs="+")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")

    e = sub.add_parser("estimate", help="predict the time of one iteration or kernel", epilog=EPILOG_ESTIMATE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    esub = e.add_subparsers(dest="what", required=True)
    st = esub.add_parser("step", help="one forward iteration of a serving replica", epilog=EPILOG_ESTIMATE,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    st.add_argument("--gpu", required=True)
    st.add_argument("--llm", required=True, help="catalog name or path to a Hugging Face config.json")
    st.add_argument("--tp", type=_positive_int, default=1)
    st.add_argument("--pp", type=_positive_int, default=1)
    st.add_argument("--ep", type=_positive_int, default=1)
    st.add_argument("--prefill", type=_batch, action="append", default=[], metavar="BxS",
                    help="B sequences of S new tokens (repeatable)")
    st.add_argument("--decode", type=_batch, action="append", default=[], metavar="BxL",
                    help="B sequences at context L generating one token (repeatable)")
    g = st.add_mutually_exclusive_group()
    g.add_argument("--cuda-graphs", dest="cuda_graphs", action="store_true", default=True)
    g.add_argument("--eager", dest="cuda_graphs", action="store_false")
    st.add_argument("--host-per-kernel-us", type=_positive_float, default=None, metavar="US",
                    help="with --eager: the framework's host time per kernel (default: measured on the "
                         "calibration host, profiles/measured/<gpu>/model_forward.csv)")
    st.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp8"])
    st.add_argument("--kv-dtype", default=None, choices=["bf16", "fp16", "fp8"])
    st.add_argument("--cost-model", default="calibrated", choices=["calibrated", "roofline"])
    st.add_argument("--json", action="store_true")
    from simcluster.commands.train_step import add_train_step_parser
    add_train_step_parser(esub)
    from simcluster.commands.kernel import add_kernel_parsers
    add_kernel_parsers(esub)
    from simcluster.commands.calibrate import add_calibrate_parser
    add_calibrate_parser(sub)
    from simcluster.commands.place_experts import add_place_experts_parser
    add_place_experts_parser(sub)
    return p


def _calibrate(args) -> int:
    from simcluster.commands.calibrate import calibrate
    return calibrate(args)


def _place_experts(args) -> int:
    from simcluster.commands.place_experts import place_experts_command
    return place_experts_command(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    handler = {
        "plan": commands.plan,
        "simulate": commands.simulate,
        "validate": commands.validate,
        "estimate": commands.estimate,
        "calibrate": _calibrate,
        "place-experts": _place_experts,
    }[args.command]
    try:
        return handler(args)
    except (ValueError, OSError) as err:
        print(f"simcluster: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
