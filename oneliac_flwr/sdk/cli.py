"""Command line for hospitals that don't write Python.

``python -m oneliac_flwr.sdk init --state-dir DIR`` creates the state directory and the
hospital's keys and prints what the operator registers (public keys and fingerprints).
``python -m oneliac_flwr.sdk participate --csv FILE --rounds N`` takes part in ``N``
rounds with the hospital's CSV (organization id, URL and API key from the options or
``ONELIAC_ORGANIZATION_ID``, ``ONELIAC_URL``, ``ONELIAC_API_KEY``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from oneliac_flwr.errors import OneliacError
from oneliac_flwr.sdk.dp import DifferentialPrivacy
from oneliac_flwr.sdk.learner import STATE_DIR_ENV, FederatedLearner, config_from_file
from oneliac_flwr.sdk.state import StateDirectory

__all__ = ["main"]

ORGANIZATION_ENV = "ONELIAC_ORGANIZATION_ID"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m oneliac_flwr.sdk", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="create the state directory and keys; print what to register")
    init.add_argument("--state-dir", default=os.environ.get(STATE_DIR_ENV), required=STATE_DIR_ENV not in os.environ)
    init.add_argument("--json", action="store_true", help="print the registration as JSON")
    run = commands.add_parser("participate", help="take part in N rounds with a CSV")
    run.add_argument("--csv", required=True, help="the hospital's table")
    run.add_argument("--rounds", type=int, required=True)
    run.add_argument("--organization-id", default=os.environ.get(ORGANIZATION_ENV))
    run.add_argument("--url", default=None, help="coordinator URL (default $ONELIAC_URL)")
    run.add_argument("--state-dir", default=None, help=f"default ${STATE_DIR_ENV} or ~/.oneliac/<organization>")
    run.add_argument("--epochs", type=int, default=None)
    run.add_argument("--batch-size", type=int, default=None)
    run.add_argument("--dp-epsilon", type=float, default=None, help="noise each update: epsilon per release")
    run.add_argument("--dp-delta", type=float, default=1e-5)
    run.add_argument("--sensitivity", type=float, default=1.0, help="clip bound of each release")
    run.add_argument("--ca-bundle", default=None, help="CA bundle to verify the coordinator's TLS certificate")
    run.add_argument("--config", default=None,
                     help="a local override of the coordinator's published settings (JSON of config groups: "
                          "training and the local data split; any other field must match; default $ONELIAC_CONFIG)")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status (2: bad use or a refused request)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "init":
            keys = StateDirectory(args.state_dir).registration()
            if args.json:
                print(json.dumps(keys, indent=2))
            else:
                print(f"state directory: {args.state_dir}")
                print("give the operator these public keys to register this hospital:")
                for name, value in keys.items():
                    print(f"  {name}: {value}")
            return 0
        if not args.organization_id:
            print(f"error: --organization-id or {ORGANIZATION_ENV} is required", file=sys.stderr)
            return 2
        dp = None if args.dp_epsilon is None else DifferentialPrivacy(args.dp_epsilon, delta=args.dp_delta)
        config = None if args.config is None else config_from_file(args.config)
        with FederatedLearner(args.organization_id, base_url=args.url, state_dir=args.state_dir, config=config,
                              verify=args.ca_bundle or True) as learner:  # fmt: skip
            receipts = learner.run(args.csv, rounds=args.rounds, epochs=args.epochs, batch_size=args.batch_size,
                                   dp=dp, sensitivity=args.sensitivity)  # fmt: skip
            for receipt in receipts:
                print(json.dumps({"round": receipt.round, "receipt": receipt.receipt, "status": receipt.status,
                                  "model_version": receipt.model_version}))  # fmt: skip
            print(json.dumps({"epsilon_spent": learner.get_current_epsilon()}))
        return 0
    except OneliacError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
