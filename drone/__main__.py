"""`plane-drone` / `python -m drone`."""

from __future__ import annotations

import sys

from shared.daemon import common_parser


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(
        "plane-drone", "Plane drone: runs backends in Docker and proxies to them."
    )
    parser.add_argument("--cluster", metavar="NAME", help="cluster this drone serves")
    parser.add_argument("--ip", metavar="ADDR", help="public IP of this host")
    parser.add_argument("--proxy-listen", metavar="HOST:PORT", help="proxy address")
    parser.add_argument("--metrics-listen", metavar="HOST:PORT", help="Prometheus endpoint")
    parser.add_argument("--state-dir", metavar="DIR", help="where the drone keeps its ID")
    parser.add_argument("--docker-network", metavar="NAME", help="Docker network for backends")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
