"""Wire protocol, NATS helpers, configuration and the client shared by every Plane process."""

import prometheus_client

__version__ = "0.1.0"

# Every process imports this package before it makes a metric: no `*_created` series,
# which would double every counter and histogram family for a timestamp nobody reads.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
