"""The whole cluster with least privilege on: every process with its role's credentials.

A client with `client.creds`, knowing nothing of this project, runs the seed
page's request through to Swept; a drone that reports on another drone's
backend is refused and nothing is stored; a client cannot drain.
"""

from __future__ import annotations

from typing import Any

import aiodocker
import nats
import pytest

from shared import credentials, subjects, wire
from shared.client import PlaneClient, Timeout
from shared.protocol import BackendState, UpdateBackendStateMessage, utc_now
from tests.e2e.cluster import MakeCluster
from tests.e2e.faults import stored_last_states
from tests.e2e.test_seed_api import seed_request_runs_until_swept

pytestmark = pytest.mark.timeout(90)


async def test_the_seed_request_runs_to_swept_with_client_credentials(
    make_auth_cluster: MakeCluster, docker: aiodocker.Docker
) -> None:
    cluster = await make_auth_cluster(1)
    assert cluster.auth is not None
    seed = credentials.read(str(cluster.auth / "client.creds")).seed
    nc = await nats.connect(cluster.nats.url, nkeys_seed_str=seed)  # NATS's default inbox
    try:
        await seed_request_runs_until_swept(cluster, docker, nc)
    finally:
        await nc.close()


async def test_a_drone_cannot_report_on_another_drones_backend_and_a_client_cannot_drain(
    make_auth_cluster: MakeCluster,
) -> None:
    cluster = await make_auth_cluster(2)
    assert cluster.auth is not None
    backend = await cluster.spawn_ready()
    [listed] = await cluster.plane.backends()
    owner = next(d for d in cluster.drones if d.drone_id == listed.drone)
    other = next(d for d in cluster.drones if d.drone_id != listed.drone)
    before = (await stored_last_states(cluster))[backend]

    # The other drone, with its own credentials, on its own subject: refused, nothing stored.
    found = credentials.read(str(cluster.auth / f"drone-{other.drone_id}.creds"))
    nc = await nats.connect(
        cluster.nats.url, nkeys_seed_str=found.seed, inbox_prefix=found.inbox or "_INBOX"
    )
    try:
        forged = UpdateBackendStateMessage(
            cluster=cluster.name,
            state=BackendState.TERMINATED,
            backend=backend,
            time=utc_now(),
            drone=other.drone_id,
        )
        subject = subjects.drone_update_backend_state(cluster.name, other.drone_id, backend)
        reply: Any = wire.decode(Any, (await nc.request(subject, wire.encode(forged), 10)).data)
    finally:
        await nc.close()
    assert f"runs on drone {listed.drone}" in reply["InvalidRequest"]["message"]
    assert (await stored_last_states(cluster))[backend] == before
    assert (await cluster.get(owner, backend)).status_code == 200

    # A client may not drain; an admin may.
    with pytest.raises(Timeout):
        await cluster.plane.drain(other.drone_id)
    admin = await PlaneClient.connect(cluster.client_settings("admin"), cluster.name)
    try:
        await admin.drain(other.drone_id)
        [drained] = [d for d in await admin.drones() if d.drone_id == other.drone_id]
        assert drained.state.value in ("Draining", "Drained")
    finally:
        await admin.close()
