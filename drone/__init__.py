"""The drone: backend agent (state machine, Docker runtime, recovery) and proxy."""
