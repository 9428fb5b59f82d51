"""The `plane` command-line client."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plane", description="Talk to a Plane cluster over NATS.")
    parser.add_argument("--nats", metavar="URL[,URL...]", help="NATS servers (env PLANE_NATS)")
    parser.add_argument("--cluster", metavar="NAME", help="cluster name (env PLANE_CLUSTER)")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
