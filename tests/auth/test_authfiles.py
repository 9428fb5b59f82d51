"""`plane auth`: the files it writes, credentials as the processes read them, rotation."""

from __future__ import annotations

import asyncio
import signal
import stat
from pathlib import Path

import nats
import nats.errors
import pytest

from controller.config import ControllerSettings
from controller.config import check as check_controller
from drone.config import DroneSettings
from drone.config import check as check_drone
from drone.service import configured_drone_id
from shared import authconf, credentials, roles
from shared.bus import NatsSettings, connect
from shared.config import ConfigError
from tests.auth.conftest import CLUSTER, AuthSetup
from tests.support.natsserver import NatsServer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "AUTH.md"


def test_init_writes_one_secret_per_role_and_refuses_to_overwrite(tmp_path: Path) -> None:
    written = authconf.init(tmp_path / "a", CLUSTER)
    names = {p.name for p in written}
    assert {"controller.creds", "client.creds", "admin.creds", authconf.CONF_FILE} <= names
    for name in ("controller.creds", "client.creds", "admin.creds", authconf.STATE_FILE):
        mode = stat.S_IMODE((tmp_path / "a" / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    found = credentials.read(str(tmp_path / "a" / "controller.creds"))
    assert (found.role, found.inbox, found.drone) == ("controller", "_INBOX_controller", None)
    with pytest.raises(authconf.AuthError, match="holds a set-up already"):
        authconf.init(tmp_path / "a", CLUSTER)
    with pytest.raises(authconf.AuthError, match="not a domain name"):
        authconf.init(tmp_path / "b", "not a cluster")


def test_a_drone_identity_names_its_id_and_a_second_one_replaces_the_first(
    tmp_path: Path,
) -> None:
    authconf.init(tmp_path, CLUSTER)
    authconf.add_drone(tmp_path, "host-7")
    first = credentials.read(str(tmp_path / "drone-host-7.creds"))
    assert (first.role, first.drone, first.inbox) == ("drone", "host-7", "_INBOX_drone_host-7")
    authconf.add_drone(tmp_path, "host-7")
    second = credentials.read(str(tmp_path / "drone-host-7.creds"))
    assert second.seed != first.seed
    state = authconf.load(tmp_path)
    assert [u.drone for u in state.users if u.role == "drone"] == ["host-7"]
    conf = (tmp_path / authconf.CONF_FILE).read_text()
    assert credentials.public_key(second.seed or "") in conf
    assert credentials.public_key(first.seed or "") not in conf
    authconf.remove_drone(tmp_path, "host-7")
    assert not (tmp_path / "drone-host-7.creds").exists()
    with pytest.raises(authconf.AuthError, match="no drone"):
        authconf.remove_drone(tmp_path, "host-7")
    with pytest.raises(authconf.AuthError, match="1-128 characters"):
        authconf.add_drone(tmp_path, "bad.id")


def test_credentials_files_of_every_kind_are_read_or_refused_clearly(tmp_path: Path) -> None:
    seed, public = credentials.new_seed()
    bare = tmp_path / "bare.nk"
    bare.write_text(seed + "\n")
    assert credentials.read(str(bare)).seed == seed
    jwt = tmp_path / "user.creds"
    jwt.write_text(
        "-----BEGIN NATS USER JWT-----\neyJ0eXAi\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
    assert credentials.read(str(jwt)).is_jwt
    damaged = tmp_path / "damaged.creds"
    damaged.write_text(credentials.render(seed[:-2] + "AA", "client", "_INBOX", None, CLUSTER))
    with pytest.raises(credentials.CredentialsError, match="not valid"):
        credentials.read(str(damaged))
    with pytest.raises(credentials.CredentialsError, match="no NKey seed"):
        empty = tmp_path / "empty"
        empty.write_text("# nothing\n")
        credentials.read(str(empty))
    with pytest.raises(credentials.CredentialsError, match="No such file"):
        credentials.read(str(tmp_path / "missing"))
    client = tmp_path / "client.creds"
    client.write_text(credentials.render(seed, "client", "_INBOX", None, CLUSTER))
    with pytest.raises(credentials.CredentialsError, match="of a client, not of a drone"):
        credentials.check_role(str(client), "drone")
    assert public.startswith("U")


def test_the_docs_show_the_roles_as_the_code_has_them() -> None:
    assert roles.markdown() in DOCS.read_text(), "docs/AUTH.md: paste roles.markdown() again"


async def test_rotating_a_drones_key_locks_out_the_old_one(auth: AuthSetup) -> None:
    old = auth.creds("drone-a").read_text()
    settings = NatsSettings(servers=[auth.server.url], credentials_file=str(auth.creds("drone-a")))
    nc = await connect(settings, name="test", wait_forever=False)
    await nc.close()

    authconf.add_drone(auth.directory, "drone-a")  # a new key for it
    reloaded = auth.server.log
    auth.server.proc.send_signal(signal.SIGHUP)  # nats-server --signal reload
    assert reloaded is not None
    await wait_for_log(auth.server, "Reloaded server configuration")

    stale = auth.directory / "stale.creds"
    stale.write_text(old)
    with pytest.raises(nats.errors.Error):
        await nats.connect(
            auth.server.url,
            nkeys_seed_str=credentials.read(str(stale)).seed,
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )
    fresh = await connect(settings, name="test", wait_forever=False)
    await fresh.close()


async def wait_for_log(server: NatsServer, text: str) -> None:
    assert server.log is not None
    async with asyncio.timeout(10):
        while True:
            if text in server.log.read_text():
                return
            await asyncio.sleep(0.05)


def test_processes_take_only_credentials_of_their_role_and_a_drone_its_id(
    tmp_path: Path,
) -> None:

    authconf.init(tmp_path, CLUSTER)
    authconf.add_drone(tmp_path, "host-7")

    def nats(name: str) -> NatsSettings:
        return NatsSettings(credentials_file=str(tmp_path / name))

    drone = DroneSettings(nats=nats("drone-host-7.creds"), cluster=CLUSTER)
    check_drone(drone)
    assert configured_drone_id(drone) == "host-7"
    with pytest.raises(ConfigError, match="names drone 'host-7'"):
        check_drone(DroneSettings(nats=nats("drone-host-7.creds"), drone_id="other"))
    with pytest.raises(ConfigError, match="of a client, not of a drone"):
        check_drone(DroneSettings(nats=nats("client.creds")))
    check_controller(ControllerSettings(nats=nats("controller.creds")))
    with pytest.raises(ConfigError, match="of a drone, not of a controller"):
        check_controller(ControllerSettings(nats=nats("drone-host-7.creds")))
