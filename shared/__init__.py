"""Wire protocol, NATS helpers, configuration and the client shared by every Plane process."""

__version__ = "0.1.0"
