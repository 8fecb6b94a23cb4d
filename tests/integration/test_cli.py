"""The `portico` command: key administration against OpenBao, `portico up`, tokens."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import grpc
import httpx
import hvac
import hvac.exceptions
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.support.openbao import OpenBaoDevServer
from tests.support.portico_up import PORTICO, REPO, PorticoUp, port_open

from portico.account.service import SERVICE_NAME as ACCOUNT_SERVICE
from portico.execution.service import SERVICE_NAME as EXECUTION_SERVICE
from portico.runtime.auth import hash_token
from portico.runtime.secp256k1 import recover_address
from portico.signer.v1 import signer_service_pb2 as pb
from portico.signer.v1 import signer_service_pb2_grpc
from portico.venues.syndr import models
from portico.venues.syndr import typed_data as syndr
from portico.venues.syndr.http import SyndrHttpClient


def portico(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PORTICO, *args], env={**os.environ, **env}, input=stdin, capture_output=True, text=True,
                          timeout=60, cwd=REPO)


@pytest.fixture
def vault_env(openbao: OpenBaoDevServer) -> dict[str, str]:
    return {"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token,
            "PORTICO_SIGNER_KEY_PREFIX": f"cli-test-{secrets.token_hex(3)}"}


def test_keys_create_import_list_and_set_policy(vault_env: dict[str, str], openbao: OpenBaoDevServer) -> None:
    created = portico(["signer", "keys", "create", "hot-1", "--primary-type", "Order", "--domain-name", "Syndr",
                       "--chain-id", "421614"], vault_env)
    assert created.returncode == 0, created.stderr
    key_id, address = created.stdout.split()
    assert key_id == "hot-1" and address.startswith("0x") and len(address) == 42
    stored = openbao.client().secrets.kv.v2.read_secret_version(
        path=f"{vault_env['PORTICO_SIGNER_KEY_PREFIX']}/keys/hot-1", raise_on_deleted_version=True)["data"]["data"]
    assert stored["private_key"][2:] not in created.stdout + created.stderr  # never printed

    private = "0x" + secrets.token_hex(32)
    imported = portico(["signer", "keys", "import", "cold-1", "--primary-type", "SignKey"], vault_env, stdin=private)
    assert imported.returncode == 0, imported.stderr
    assert private[2:] not in imported.stdout + imported.stderr
    from eth_account import Account

    assert imported.stdout.split()[1] == Account.from_key(private).address

    listed = portico(["signer", "keys", "list-addresses"], vault_env)
    assert listed.returncode == 0
    assert listed.stdout.splitlines() == [f"cold-1\t{imported.stdout.split()[1]}", f"hot-1\t{address}"]

    policy = portico(["signer", "keys", "set-policy", "hot-1", "--allow-raw-digest"], vault_env)
    assert policy.returncode == 0, policy.stderr
    doc = openbao.client().secrets.kv.v2.read_secret_version(
        path=f"{vault_env['PORTICO_SIGNER_KEY_PREFIX']}/policies/hot-1", raise_on_deleted_version=True)["data"]["data"]
    assert doc == {"primary_types": [], "domain_names": [], "chain_ids": [], "allow_raw_digest": True}


def test_keys_errors_are_clear(vault_env: dict[str, str]) -> None:
    assert portico(["signer", "keys", "create", "dup"], vault_env).returncode == 0
    again = portico(["signer", "keys", "create", "dup"], vault_env)
    assert again.returncode == 1 and "already exists" in again.stderr
    missing = portico(["signer", "keys", "set-policy", "ghost", "--primary-type", "Order"], vault_env)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    bad_id = portico(["signer", "keys", "create", "Bad Id"], vault_env)
    assert bad_id.returncode == 1 and "invalid key id" in bad_id.stderr
    bad_key = portico(["signer", "keys", "import", "imp"], vault_env, stdin="0xnot-hex-at-all")
    assert bad_key.returncode == 1 and "not-hex-at-all" not in bad_key.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """`portico … | head`: the pipe closes before the output is written; no traceback, the shell's 141."""
    process = subprocess.Popen([*PORTICO, "config-table"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # long before the command has imported anything and printed
    complaint = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert complaint == ""


def test_token_new_prints_a_matching_entry() -> None:
    result = portico(["token", "new", "desk-a", "--scopes", "read,trade"], {})
    assert result.returncode == 0
    token = result.stdout.splitlines()[0].split(": ", 1)[1]
    entry = json.loads(result.stdout.splitlines()[1].split(": ", 1)[1])
    assert entry == {"name": "desk-a", "sha256": hash_token(token), "scopes": ["read", "trade"]}
    assert portico(["token", "new", "x", "--scopes", "root"], {}).returncode == 2


async def _portico_async(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [*PORTICO, *args], cwd=REPO, capture_output=True, text=True,
                                   timeout=60)


async def _order_round_trip(state: dict[str, object], state_file: Path) -> None:
    """`portico order buy` rests an order on the demo account (registered by `portico up`), then cancel and list."""
    simulator = state["simulator"]
    assert isinstance(simulator, dict)
    async with SyndrHttpClient(simulator["http"]) as venue:
        book = (await venue.call("public/get_order_book", {"instrument_name": "ETH-PERP", "depth": 1})).result
        instruments = models.parse_instruments((await venue.call("public/get_instruments", {"kind": "any"})).result)
    tick = instruments["ETH-PERP"].tick_size
    # 20% under the best bid, on the tick: rests without filling.
    price = (Decimal(book["best_bid_price"]) * Decimal("0.8") / tick).to_integral_value() * tick
    files = ("--state-file", str(state_file))

    bought = await _portico_async("order", "buy", "ETH-PERP", "0.1", "--price", str(price), *files)
    assert bought.returncode == 0, bought.stdout + bought.stderr
    first, placed = bought.stdout.splitlines()
    client_order_id = first.split()[1]
    assert client_order_id.startswith("cli-") and f"--client-order-id {client_order_id}" in first
    assert placed.startswith("OPEN  buy 0.1 ETH-PERP @ ") and f"client-order-id {client_order_id}" in placed
    assert Decimal(placed.split(" @ ")[1].split()[0]) == price and "filled 0" in placed

    listed = await _portico_async("order", "list", *files)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[:2] == ["ORDER", "ID"] and client_order_id in listed.stdout

    cancelled = await _portico_async("order", "cancel", "--client-order-id", client_order_id, *files)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert cancelled.stdout.startswith("CANCELLED  buy 0.1 ETH-PERP") and client_order_id in cancelled.stdout

    listed = await _portico_async("order", "list", *files)
    assert (listed.returncode, listed.stdout) == (0, "no open orders\n"), listed.stderr

    off_tick = await _portico_async("order", "buy", "ETH-PERP", "0.1", "--price", str(price + tick / 2), *files)
    assert off_tick.returncode == 1
    assert off_tick.stderr.startswith("portico order buy: INVALID_ARGUMENT from ")
    assert off_tick.stderr.rstrip().endswith("[PRICE_NOT_ON_TICK]")


async def _account_summary(state: dict[str, object], state_file: Path) -> None:
    """`portico account` prints the demo account's summary and positions through the account service."""
    demo = state["demo"]
    assert isinstance(demo, dict)
    shown = await _portico_async("account", "--state-file", str(state_file))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"account {demo['account']} at syndr"
    equity = next(line for line in lines if line.split()[:1] == ["equity"])
    Decimal(equity.split()[1])  # a decimal string
    assert any(line.split()[:2] == ["margin", "mode"] for line in lines)
    assert lines[-1] == "no open positions"

    # After a fill the position shows, with the summary.
    filled = await _portico_async("order", "buy", "ETH-PERP", "0.1", "--market", "--state-file", str(state_file))
    assert filled.returncode == 0 and "FILLED" in filled.stdout, filled.stdout + filled.stderr
    deadline = time.monotonic() + 10
    while True:
        shown = await _portico_async("account", "--state-file", str(state_file))
        assert shown.returncode == 0, shown.stderr
        rows = [line.split() for line in shown.stdout.splitlines()]
        if ["ETH-PERP", "long", "0.1"] in [row[:3] for row in rows]:
            break
        assert time.monotonic() < deadline, shown.stdout
        await asyncio.sleep(0.2)
    assert rows[rows.index(["SYMBOL", "SIDE", "SIZE", "AVG", "PRICE", "MARK", "PRICE", "UNREALIZED", "PNL",
                            "REALIZED", "PNL"]) + 1][:3] == ["ETH-PERP", "long", "0.1"]
    assert Decimal(next(row for row in rows if row[:2] == ["initial", "margin"])[2]) > 0

    watched = await _portico_async("account", "--state-file", str(state_file), "--watch", "--seconds", "2")
    assert watched.returncode == 0, watched.stderr
    assert demo["account"] in watched.stdout and "position update(s) streamed" in watched.stdout

    wrong = await _portico_async("account", "--state-file", str(state_file), "--account", "0x" + "12" * 20)
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("portico account: NOT_FOUND from "), wrong.stderr


def _modes(directory: Path) -> tuple[int, set[int]]:
    """The permission bits of `directory` and the set of those of the files in it."""
    return directory.stat().st_mode & 0o777, {path.stat().st_mode & 0o777 for path in directory.iterdir()}


def _cmdlines_with(marker: str) -> list[str]:
    """The command lines of every process (as `ps` shows them) that contain `marker`."""
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if marker in line:
            found.append(line)
    return found


async def test_portico_up_serves_signs_and_stops_cleanly(tmp_path: Path) -> None:
    up = PorticoUp(tmp_path)
    state_file, ports = up.state_file, up.ports
    vault_port, signer_port, sim_port, refdata_port, gateway_port, marketdata_port, execution_port, account_port = (
        ports.vault, ports.signer, ports.sim, ports.refdata, ports.gateway, ports.marketdata, ports.execution,
        ports.account)
    up.start()
    try:
        state = await up.wait_for_state()
        assert oct(state_file.stat().st_mode & 0o777) == "0o600"
        assert _modes(Path(state["logs"])) == (0o700, {0o600})  # Vault's dev log shows its root token
        vault_cmdlines = _cmdlines_with(f"-dev-listen-address=127.0.0.1:{vault_port}")
        assert vault_cmdlines and not any("root-token" in line for line in vault_cmdlines)  # `ps` shows no token
        assert state["services"] == {"signer": f"127.0.0.1:{signer_port}", "refdata": f"127.0.0.1:{refdata_port}",
                                     "marketdata": f"127.0.0.1:{marketdata_port}",
                                     "execution": f"127.0.0.1:{execution_port}",
                                     "account": f"127.0.0.1:{account_port}"}
        for name, target in state["services"].items():  # every service listed is SERVING (as a whole)
            async with grpc.aio.insecure_channel(target) as channel:
                health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING, name
        for name, service in (("execution", EXECUTION_SERVICE), ("account", ACCOUNT_SERVICE)):
            async with grpc.aio.insecure_channel(state["services"][name]) as channel:
                health = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING, name
        # The demo account was provisioned through the account service's RegisterSigningKey: orders work.
        await _order_round_trip(state, state_file)
        await _account_summary(state, state_file)
        book = await asyncio.to_thread(
            subprocess.run, [*PORTICO, "book", "ETH-PERP", "--state-file", str(state_file), "--seconds", "2"],
            cwd=REPO, capture_output=True, text=True, timeout=30)
        assert book.returncode == 0, book.stderr  # the terminal view verified every update's checksum
        assert "ETH-PERP" in book.stdout and "LIVE" in book.stdout
        assert state["gateway"] == f"http://127.0.0.1:{gateway_port}"
        async with httpx.AsyncClient() as http:  # reference data was synced on start, through the gateway
            perp = await http.get(f"{state['gateway']}/v1/instruments/syndr/ETH-PERP",
                                  headers={"Authorization": f"Bearer {state['tokens']['read']}"})
        assert perp.status_code == 200 and perp.json()["contractType"] == "linear_perpetual"
        assert state["vault"]["addr"] == f"http://127.0.0.1:{vault_port}"
        assert state["simulator"]["http"] == f"http://127.0.0.1:{sim_port}/api/v1"
        assert state["simulator"]["ws"] == f"ws://127.0.0.1:{sim_port}/ws/api/v1"
        async with SyndrHttpClient(state["simulator"]["http"]) as venue:
            assert "ETH-PERP" in (await venue.call("public/get_all_instrument_names")).result
        assert set(state["tokens"]) == {"read", "trade", "admin"}
        demo = state["demo"]
        # The venue API key pair went to Vault only: nothing of it in the state file.
        assert set(demo) == {"venue", "account", "account_key_id", "signing_key_id", "signing_key_address"}
        data = syndr.order_typed_data(
            verifying_contract="0x" + "ab" * 20, account=demo["account"], instrument_id=1, is_buy=True,
            order_type=0, time_in_force=0, post_only=False, reduce_only=False, price=Decimal("3000"),
            amount=Decimal("0.1"), salt=secrets.randbits(64), expiration=1_900_000_000_000,
            timestamp=1_800_000_000_000)
        async with grpc.aio.insecure_channel(state["services"]["signer"]) as channel:
            reply = await signer_service_pb2_grpc.SignerServiceStub(channel).Sign(
                pb.SignRequest(key_id=demo["signing_key_id"], typed_data_json=json.dumps(data)),
                metadata=(("authorization", f"Bearer {state['tokens']['trade']}"),), timeout=10)
        assert reply.address == demo["signing_key_address"]
        assert recover_address(reply.digest, reply.signature) == reply.address
        # The key administrator's token in the state file works for `portico signer keys`, and reads no key.
        assert set(state["vault"]) == {"addr", "key_admin_token"}
        admin_env = {"VAULT_ADDR": state["vault"]["addr"], "VAULT_TOKEN": state["vault"]["key_admin_token"]}
        listed = portico(["signer", "keys", "list-addresses"], admin_env)
        assert listed.returncode == 0, listed.stderr
        assert f"{demo['signing_key_id']}\t{demo['signing_key_address']}" in listed.stdout.splitlines()
        again = portico(["signer", "keys", "create", demo["signing_key_id"]], admin_env)  # create-only: Vault says 403
        assert again.returncode == 1 and "already exists" in again.stderr, again.stderr
        kv = hvac.Client(url=state["vault"]["addr"], token=state["vault"]["key_admin_token"]).secrets.kv.v2
        with pytest.raises(hvac.exceptions.Forbidden):
            kv.read_secret_version(path=f"portico/signer/keys/{demo['signing_key_id']}", mount_point="secret",
                                   raise_on_deleted_version=True)
    finally:
        returncode, out, err = up.stop()
    assert returncode == 0, err
    assert "Portico is up." in out
    assert not state_file.exists()
    assert not any(port_open(port) for port in ports.all())
    for token in [*state["tokens"].values(), state["vault"]["key_admin_token"]]:  # in the state file only
        assert token not in out + err
