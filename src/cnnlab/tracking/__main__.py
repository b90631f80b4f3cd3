"""`python -m cnnlab.tracking deliver`: send the runs' journals kept while the backend was unreachable.

(`python -m cnnlab.tracking worker` is the process a stage starts to write its run: see worker.py.)
"""

from __future__ import annotations

import argparse
import os
import sys

from cnnlab.tracking.backend import open_client_or_warn
from cnnlab.tracking.protocol import pending_dir, project_root
from cnnlab.tracking.worker import serve


def deliver() -> int:
    root = project_root()
    if not list(pending_dir(root).glob("*.jsonl")):
        print(f"nothing pending in {pending_dir(root)}")
        return 0
    opened = open_client_or_warn(warn_pending=True)  # opening the store delivers what is pending
    if opened is None or opened[0] is None:
        return 1
    left = len(list(pending_dir(root).glob("*.jsonl")))
    print(f"delivered to {opened[1]}; {left} journal(s) still pending in {pending_dir(root)}")
    return 1 if left else 0


def worker() -> None:
    # Replies go out on the original stdout; anything MLflow prints goes to stderr, with the stage's own.
    reply = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin, reply)
    # The run is written and the reply sent; tearing down MLflow's modules would keep the stage waiting
    # for the exit most of a second longer, and there is nothing left to clean up.
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["deliver", "worker"])
    command = parser.parse_args(argv).command
    if command == "worker":
        worker()
    raise SystemExit(deliver())


if __name__ == "__main__":
    main()
