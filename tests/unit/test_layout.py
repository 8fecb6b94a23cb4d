"""DESIGN.md's layout rule, checked: a service reaches another only through its gRPC contract.

A service's folder is its room. What another service may import of it is the
generated contract code (`<service>/v1`) and the small clients of that
contract that the owning service publishes (`signer/client.py`: `Sign`;
`refdata/watch.py`: `WatchInstruments`). Everything shared (Vault, signing-key
records, stores, the venue adapter) lives in `runtime/` or `venues/`, which
import no service at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "portico"
SERVICES = ("signer", "refdata", "marketdata", "execution", "account", "gateway", "sim")
CONTRACT_CLIENTS = {"portico.signer.client", "portico.refdata.watch"}
SHARED = ("runtime", "venues", "common")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from portico.x import y`
    return {name for name in names if name.startswith("portico.")}


def owner(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SERVICES else None


def allowed_from_another_service(module: str) -> bool:
    parts = module.split(".")
    return (len(parts) > 2 and parts[2] == "v1") or any(
        module == client or module.startswith(client + ".") for client in CONTRACT_CLIENTS)


def sources(folder: str) -> list[Path]:
    return sorted(p for p in (PACKAGE / folder).rglob("*.py") if "v1" not in p.relative_to(PACKAGE).parts)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_other_services_only_through_their_contracts(service: str) -> None:
    breaches = [f"{path.relative_to(PACKAGE)} imports {module}"
                for path in sources(service) for module in sorted(imported_modules(path))
                if owner(module) not in (None, service) and not allowed_from_another_service(module)]
    assert not breaches, "\n".join(breaches)


@pytest.mark.parametrize("folder", SHARED)
def test_shared_code_imports_no_service(folder: str) -> None:
    breaches = [f"{path.relative_to(PACKAGE)} imports {module}"
                for path in sources(folder) for module in sorted(imported_modules(path)) if owner(module)]
    assert not breaches, "\n".join(breaches)
