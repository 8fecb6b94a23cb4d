"""The `buf generate` templates for Go, Java and TypeScript users (buf.gen.*.yaml at the repo root).

The TypeScript one uses a local plugin from node_modules (ts-proto), so it is run for real.
The Go and Java ones name remote plugins on the Buf Schema Registry, which this machine
cannot reach: they are checked for shape (buf v2, the right plugins and output folders).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "node_modules" / ".bin"


def _template(name: str) -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    document: dict[str, Any] = yaml.safe_load((REPO / f"buf.gen.{name}.yaml").read_text())
    assert document["version"] == "v2"  # as buf.yaml
    return document


def _plugins(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(plugin.get("remote") or plugin.get("local") or plugin["protoc_builtin"], plugin["out"])
            for plugin in document["plugins"]]


def _overrides(document: dict[str, Any]) -> dict[str, Any]:
    assert document["managed"]["enabled"] is True
    return {o["file_option"]: o["value"] for o in document["managed"]["override"]}


def test_go_template_names_protobuf_go_and_grpc_go() -> None:
    document = _template("go")
    assert _plugins(document) == [("buf.build/protocolbuffers/go", "gen/go"), ("buf.build/grpc/go", "gen/go")]
    assert all(plugin["opt"] == "paths=source_relative" for plugin in document["plugins"])
    assert "go_package_prefix" in _overrides(document)  # the protos set no go_package


def test_java_template_names_protobuf_java_and_grpc_java() -> None:
    document = _template("java")
    assert _plugins(document) == [("buf.build/protocolbuffers/java", "gen/java"),
                                  ("buf.build/grpc/java", "gen/java")]
    assert _overrides(document) == {"java_package_prefix": "com.example", "java_multiple_files": True}


def test_ts_template_names_ts_proto_for_grpc_js() -> None:
    document = _template("ts")
    assert _plugins(document) == [("protoc-gen-ts_proto", "gen/ts")]
    assert "outputServices=grpc-js" in document["plugins"][0]["opt"]


def test_ts_template_generates_grpc_js_clients(tmp_path: Path) -> None:
    for tool in ("buf", "protoc-gen-ts_proto"):
        if not (BIN / tool).exists():
            pytest.fail(f"{BIN / tool} is missing: run `make install` (npm install)")
    result = subprocess.run(
        [str(BIN / "buf"), "generate", "--template", "buf.gen.ts.yaml", "--output", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    assert result.returncode == 0, result.stderr
    out = tmp_path / "gen" / "ts" / "portico"
    for path, client in (("refdata/v1/reference_data_service.ts", "ReferenceDataServiceClient"),
                         ("marketdata/v1/market_data_service.ts", "MarketDataServiceClient"),
                         ("execution/v1/execution_service.ts", "ExecutionServiceClient"),
                         ("account/v1/account_service.ts", "AccountServiceClient"),
                         ("signer/v1/signer_service.ts", "SignerServiceClient")):
        code = (out / path).read_text()
        assert f"export const {client} = makeGenericClientConstructor(" in code, path
        assert 'from "@grpc/grpc-js"' in code, path
