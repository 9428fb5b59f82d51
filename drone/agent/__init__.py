"""The drone's agent: runs backends in Docker through their whole life.

Modules: `state` (the pure backend state machine: events in, instructions
out), `runner` (one backend: carries out the machine's instructions),
`agent` (presence, spawns, exit watching, recovery, reconcile, sweeping),
`docker_runtime` (the only module that talks to aiodocker), `reporter`
(state updates to the controller, in order, in the background), `spec`
(SpawnRequest → container configuration and labels, and back), `probe`
(readiness over HTTP), `telemetry` (output lines, CPU and memory shares),
`presence` (what the heartbeat says), `statedir` (the drone's ID and drain
flag on disk), `metrics`.
"""
