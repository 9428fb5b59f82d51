"""`plane-controller` / `python -m controller`."""

from __future__ import annotations

import sys

from shared.daemon import common_parser


def main(argv: list[str] | None = None) -> int:
    parser = common_parser("plane-controller", "Plane controller: schedules backends onto drones.")
    parser.add_argument("--cluster", action="append", metavar="NAME", help="cluster to serve")
    parser.add_argument("--metrics-listen", metavar="HOST:PORT", help="Prometheus endpoint")
    parser.add_argument("--dns-listen", metavar="HOST:PORT", help="authoritative DNS server")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
