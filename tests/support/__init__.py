"""Helpers that run real components (nats-server, Docker) for tests and benchmarks."""
