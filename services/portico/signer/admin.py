"""`portico signer keys create|import|list-addresses|set-policy`: key administration.

These talk to Vault directly with the operator's own Vault credentials
(`PORTICO_VAULT_*` / `VAULT_ADDR` + `VAULT_TOKEN`), never through gRPC, so the
signer service has no RPC that creates, imports or exports keys. `create`
generates the key inside this process and prints only its address; `import`
reads the private key from stdin (or a file), never from the command line
where `ps` would show it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from portico.runtime.secp256k1 import address_from_private_key, generate_private_key, parse_private_key
from portico.runtime.vault import VaultCasMismatch, VaultError, VaultNotFound, VaultSession, VaultSettings
from portico.signer.keystore import KEY_ID_RE, KeyPaths
from portico.signer.policy import KeyPolicy
from portico.signer.settings import KEY_PREFIX

__all__ = ["KeyAdmin", "add_arguments", "run"]


class KeyAdminError(Exception):
    """An admin operation could not be done; the message is safe to print."""


class KeyAdmin:
    """Key administration against Vault (used by the CLI, `portico up` and tests)."""

    def __init__(self, vault: VaultSession, paths: KeyPaths):
        self._vault = vault
        self._paths = paths

    async def create(self, key_id: str, policy: KeyPolicy) -> str:
        """Generate a key inside this process, store it with its policy; return the address."""
        return await self._store(key_id, generate_private_key(), policy)

    async def import_key(self, key_id: str, private_key_hex: str, policy: KeyPolicy) -> str:
        """Store an existing private key with its policy; return the address."""
        try:
            private_key = parse_private_key(private_key_hex)
        except ValueError as exc:
            raise KeyAdminError(str(exc)) from None
        return await self._store(key_id, private_key, policy)

    async def _store(self, key_id: str, private_key: bytes, policy: KeyPolicy) -> str:
        if not KEY_ID_RE.fullmatch(key_id):
            raise KeyAdminError(f"invalid key id {key_id!r}: use 1-64 of a-z 0-9 _ . - starting alphanumeric")
        address = address_from_private_key(private_key)
        try:
            await self._vault.write_kv(self._paths.key(key_id), {"private_key": "0x" + private_key.hex(),
                                                                  "address": address}, cas=0)
        except VaultCasMismatch:
            raise KeyAdminError(f"key {key_id} already exists; keys are never overwritten") from None
        await self._vault.write_kv_metadata(self._paths.key(key_id), {"address": address})
        await self.set_policy(key_id, policy, must_exist=False)
        return address

    async def set_policy(self, key_id: str, policy: KeyPolicy, *, must_exist: bool = True) -> None:
        """Replace a key's policy."""
        if must_exist:
            try:
                await self._vault.read_kv_metadata(self._paths.key(key_id))
            except VaultNotFound:
                raise KeyAdminError(f"key {key_id} does not exist") from None
        await self._vault.write_kv(self._paths.policy(key_id), policy.to_document())

    async def list_addresses(self) -> list[tuple[str, str]]:
        """(key id, address) of every key, read from metadata only."""
        rows = []
        for key_id in sorted(await self._vault.list_kv(self._paths.keys_dir)):
            metadata = await self._vault.read_kv_metadata(self._paths.key(key_id))
            rows.append((key_id, metadata.custom_metadata.get("address", "?")))
        return rows


def _policy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--primary-type", action="append", default=[], metavar="TYPE",
                        help="EIP-712 primary type the key may sign (repeatable)")
    parser.add_argument("--domain-name", action="append", default=[], metavar="NAME",
                        help="EIP-712 domain name the key may sign for (repeatable)")
    parser.add_argument("--chain-id", action="append", default=[], type=int, metavar="ID",
                        help="chain id the key may sign for (repeatable)")
    parser.add_argument("--allow-raw-digest", action="store_true", help="allow signing raw 32-byte digests")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Attach the `keys` sub-commands to `portico signer`."""
    keys = parser.add_subparsers(dest="keys_command", required=True, metavar="{keys}")
    keys_parser = keys.add_parser("keys", help="manage signing keys in Vault")
    sub = keys_parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="generate a key in Vault (the private key is never printed)")
    create.add_argument("key_id")
    _policy_args(create)
    imp = sub.add_parser("import", help="import a private key read from stdin or --from-file")
    imp.add_argument("key_id")
    imp.add_argument("--from-file", type=Path, help="file holding the hex private key (default: stdin)")
    _policy_args(imp)
    sub.add_parser("list-addresses", help="list key ids and their addresses")
    policy = sub.add_parser("set-policy", help="replace a key's policy")
    policy.add_argument("key_id")
    _policy_args(policy)


def _policy_from(args: argparse.Namespace) -> KeyPolicy:
    return KeyPolicy.build(primary_types=args.primary_type, domain_names=args.domain_name,
                           chain_ids=args.chain_id, allow_raw_digest=args.allow_raw_digest)


async def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    async with VaultSession(VaultSettings.from_env(env)) as vault:
        admin = KeyAdmin(vault, KeyPaths(KEY_PREFIX.get_str(env).strip("/")))
        if args.action == "create":
            address = await admin.create(args.key_id, _policy_from(args))
            print(f"{args.key_id}\t{address}")
        elif args.action == "import":
            if args.from_file is not None:
                secret = args.from_file.read_text().strip()
            elif sys.stdin.isatty():
                secret = getpass.getpass("private key (hex): ")
            else:
                secret = sys.stdin.readline().strip()
            address = await admin.import_key(args.key_id, secret, _policy_from(args))
            print(f"{args.key_id}\t{address}")
        elif args.action == "list-addresses":
            for key_id, address in await admin.list_addresses():
                print(f"{key_id}\t{address}")
        elif args.action == "set-policy":
            await admin.set_policy(args.key_id, _policy_from(args))
            print(f"{args.key_id}\tpolicy updated")
    return 0


def run(args: argparse.Namespace) -> int:
    """Execute a parsed `portico signer keys ...` command."""
    try:
        return asyncio.run(_run(args, os.environ))
    except (KeyAdminError, VaultError, ValueError) as exc:
        print(f"portico signer: {exc}", file=sys.stderr)
        return 1
