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

from portico.runtime.signing_keys import KeyAdmin, KeyAdminError, KeyPaths, KeyPolicy, PolicyError
from portico.runtime.vault import VaultError, VaultSession, VaultSettings
from portico.signer.settings import KEY_PREFIX

__all__ = ["add_arguments", "run"]


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
    """The policy the flags describe, refused (before anything is written) where the signer would read it as
    malformed and then refuse every signature of the key (KEY_MALFORMED)."""
    if any(chain_id <= 0 for chain_id in args.chain_id):
        raise KeyAdminError("--chain-id must be a positive integer")
    for flag, values in (("--primary-type", args.primary_type), ("--domain-name", args.domain_name)):
        if not all(values):
            raise KeyAdminError(f"{flag} must not be empty")
    policy = KeyPolicy.build(primary_types=args.primary_type, domain_names=args.domain_name,
                             chain_ids=args.chain_id, allow_raw_digest=args.allow_raw_digest)
    try:  # what the signer will read back
        KeyPolicy.from_document(policy.to_document())
    except PolicyError as exc:
        raise KeyAdminError(f"the signer would refuse this policy: {exc}") from None
    return policy


def _read_key_file(path: Path) -> str:
    """The hex key in `path`; a file that cannot be read is a clear error, never a traceback nor a quote of its
    bytes (a binary key file's first byte would otherwise be printed by the decoder's message)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KeyAdminError(f"cannot read --from-file {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise KeyAdminError(f"--from-file {path} is not text: it must hold the private key as hex") from None


async def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    async with VaultSession(VaultSettings.from_env(env)) as vault:
        admin = KeyAdmin(vault, KeyPaths(KEY_PREFIX.get_str(env).strip("/")))
        if args.action == "create":
            address = await admin.create(args.key_id, _policy_from(args))
            print(f"{args.key_id}\t{address}")
        elif args.action == "import":
            if args.from_file is not None:
                secret = _read_key_file(args.from_file)
            elif sys.stdin.isatty():
                secret = getpass.getpass("private key (hex): ")
            else:
                try:
                    secret = sys.stdin.readline().strip()
                except UnicodeDecodeError:
                    raise KeyAdminError("stdin is not text: it must hold the private key as hex") from None
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
