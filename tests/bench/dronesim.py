"""Simulated drones for the scheduler benchmark: heartbeat, and accept every spawn at once.

Run as `python -m tests.bench.dronesim --nats URL --cluster C --count N`; prints
`ready` once every drone has announced itself, then serves until terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop

from shared import bus, protocol, subjects, wire

TRUE = b"true"
ECHO_SUBJECT = "bench.echo"


async def main(args: argparse.Namespace) -> None:
    nc = await bus.connect(bus.NatsSettings(servers=[args.nats]), name="dronesim")
    drones = [f"sim-{i:05d}" for i in range(args.count)]
    running = dict.fromkeys(drones, 0)

    async def on_spawn(msg: bus.Msg) -> None:
        drone = msg.subject.split(".")[1]
        running[drone] += 1
        await nc.publish(msg.reply, TRUE)

    async def on_echo(msg: bus.Msg) -> None:
        await nc.publish(msg.reply, msg.data)

    # One wildcard subscription serves every simulated drone cheaply.
    await nc.subscribe("drone.*.spawn", cb=on_spawn)
    # The floor: a trivial responder in the same kind of process.
    await nc.subscribe(ECHO_SUBJECT, cb=on_echo)

    async def heartbeat() -> None:
        while True:
            for drone in drones:
                status = protocol.DroneStatusMessage(
                    drone_id=drone,
                    cluster=args.cluster,
                    drone_version="sim",
                    ready=True,
                    state=protocol.DroneState.READY,
                    running_backends=running[drone],
                    ip="127.0.0.1",
                )
                await nc.publish(subjects.drone_status(drone), wire.encode(status))
            await nc.flush()
            await asyncio.sleep(args.heartbeat)

    for drone in drones:
        connect = protocol.DroneConnectRequest(drone_id=drone, cluster=args.cluster, ip="127.0.0.1")
        await nc.publish(subjects.DRONE_REGISTER, wire.encode(connect))
    task = asyncio.create_task(heartbeat())
    await nc.flush()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    task.cancel()
    await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--nats", required=True)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--heartbeat", type=float, default=4.0)
    uvloop.run(main(parser.parse_args()))
