"""stzoo sync: send to MLflow what runs kept while their tracking server was away, and close those runs."""

from __future__ import annotations

import sys

from zoo.runs.outbox import runs_waiting, send_pending
from components.errors import error_reason


def add_parser(subcommands) -> None:
    p = subcommands.add_parser("sync", help="send what runs kept while MLflow was away (metrics, model, results, status)")
    p.add_argument("run_ids", nargs="*", help="only these runs (default: every run with something waiting)")
    p.set_defaults(run=run)


def run(args) -> int:
    waiting = args.run_ids or runs_waiting()
    if not waiting:
        print("nothing waits to be sent")
        return 0
    failed = 0
    for run_id in waiting:
        try:
            sent = send_pending(run_id)
        except Exception as error:  # the server is still away, or refuses a write: keep the rest for later
            failed += 1
            print(f"error: run {run_id}: not sent ({type(error).__name__}: {error_reason(error)}); "
                  "what remains is kept, run stzoo sync again once the server answers", file=sys.stderr)
            continue
        print(f"run {run_id}: {sent} metric values and writes sent")
    return 2 if failed else 0
