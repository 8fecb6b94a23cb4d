"""No secret in a repr: every dataclass field that holds one is declared `repr=False`.

A repr reaches logs and errors without anyone meaning it to (`extra={"record": record}`, an
f-string in an exception, a failed assertion, a debugger), and the log redaction only knows
mapping keys. So the rule is checked where the value is declared, over every dataclass in
`services/portico`: a field whose name says it is a secret (an API secret, a service or admin
bearer token, a Vault token or secret id, a password, a private key) must stay out of the repr.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re

import pytest

import portico
from portico.venues.syndr import models

# Names of secrets; not names that merely mention one (`credentials_cache_s`, `approle_secret_id_file`: a path).
SECRET_FIELD = re.compile(r"(^|_)(secret|secret_id|token|password|passphrase|private_key)$")


def _dataclasses() -> list[type]:
    found = []
    for module in pkgutil.walk_packages(portico.__path__, "portico."):
        if module.name.endswith(("_pb2", "_pb2_grpc", "__main__")):
            continue
        loaded = importlib.import_module(module.name)
        found += [obj for obj in vars(loaded).values()
                  if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == loaded.__name__]
    return found


def _holds_text(field: dataclasses.Field[object]) -> bool:
    """A secret is text or bytes (`Setting.secret` is a flag *about* a setting)."""
    return any(kind in str(field.type) for kind in ("str", "bytes"))


SECRET_FIELDS = [(cls, field) for cls in _dataclasses() for field in dataclasses.fields(cls)
                 if SECRET_FIELD.search(field.name) and _holds_text(field)]


def test_the_walk_finds_the_known_secret_fields() -> None:
    """The check below is only as good as its walk: it must see the fields it exists for."""
    names = {f"{cls.__module__}.{cls.__qualname__}.{field.name}" for cls, field in SECRET_FIELDS}
    assert {"portico.venues.syndr.credentials.ApiCredentials.api_secret",
            "portico.venues.syndr.models.CreatedApiKey.api_secret",
            "portico.runtime.vault.VaultSettings.token",
            "portico.execution.settings.ExecutionSettings.service_token"} <= names


@pytest.mark.parametrize(("cls", "field"), SECRET_FIELDS,
                         ids=[f"{cls.__qualname__}.{field.name}" for cls, field in SECRET_FIELDS])
def test_secret_fields_stay_out_of_reprs(cls: type, field: dataclasses.Field[object]) -> None:
    assert not field.repr, f"{cls.__module__}.{cls.__qualname__}.{field.name} would print its secret in a repr"


@pytest.mark.parametrize("parsed", [
    models.parse_created_api_key({"account": "0xabc", "apiKey": "key-1", "apiSecret": "s3cr3t-created"}),
    models.parse_api_keys({"apiKeys": [{"apiKey": "key-1", "scope": 1, "apiSecret": "s3cr3t-listed"}]})[0],
    models.parse_register_signing_key({"apiKey": "key-1", "apiSecret": "s3cr3t-registered"}),
], ids=["create_api_key", "get_api_keys", "register_signing_key"])
def test_venue_answers_carrying_an_api_secret_do_not_print_it(parsed: object) -> None:
    shown = repr(parsed)
    assert "key-1" in shown  # the key's name is not a secret and helps whoever reads the line
    assert "s3cr3t" not in shown
