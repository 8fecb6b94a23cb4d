#!/bin/sh
# Set up Vault (or OpenBao) for Portico on Kubernetes: a KV v2 engine, the Kubernetes auth method, and per
# service (signer, execution, account) the policy deploy/vault/<service>.hcl as `portico-<service>` and the
# role roles/<service>.json as `portico-<service>`, which binds the service account portico-<service> of
# the namespace portico (deploy/k8s/base) to that policy, for tokens whose audience is `vault` (the
# projected token the Deployments mount at /var/run/secrets/vault/token). It also writes
# deploy/vault/key-admin.hcl as `portico-key-admin`, the policy for people who run `portico signer keys`.
#
#   VAULT_ADDR=https://vault.example:8200 VAULT_TOKEN=<operator token> deploy/vault/roles/apply.sh
#
# The policies name the KV v2 mount `secret` (PORTICO_VAULT_KV_MOUNT's default, set in deploy/k8s/base).
# Optional: VAULT_BIN (vault; `bao` for OpenBao), K8S_MOUNT (kubernetes; PORTICO_VAULT_K8S_MOUNT),
# K8S_HOST (https://kubernetes.default.svc: Vault running in the cluster reviews tokens with its own
# service account), K8S_CA_CERT (a PEM file; needed when Vault runs outside the cluster, together with
# K8S_REVIEWER_JWT_FILE, a token allowed to create TokenReviews).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
policies=$(dirname "$here")
vault=${VAULT_BIN:-vault}
k8s_mount=${K8S_MOUNT:-kubernetes}
kv_mount=secret

if ! "$vault" secrets list -format=json | grep -q "\"$kv_mount/\""; then
  "$vault" secrets enable -path="$kv_mount" -version=2 kv
fi
if ! "$vault" auth list -format=json | grep -q "\"$k8s_mount/\""; then
  "$vault" auth enable -path="$k8s_mount" kubernetes
fi

set -- kubernetes_host="${K8S_HOST:-https://kubernetes.default.svc}"
if [ -n "${K8S_CA_CERT:-}" ]; then
  set -- "$@" kubernetes_ca_cert=@"$K8S_CA_CERT"
fi
if [ -n "${K8S_REVIEWER_JWT_FILE:-}" ]; then
  set -- "$@" token_reviewer_jwt=@"$K8S_REVIEWER_JWT_FILE" disable_local_ca_jwt=true
fi
"$vault" write "auth/$k8s_mount/config" "$@"

for service in signer execution account; do
  "$vault" policy write "portico-$service" "$policies/$service.hcl"
  "$vault" write "auth/$k8s_mount/role/portico-$service" @"$here/$service.json"
done
# For operators, not pods: attach it to whoever runs `portico signer keys` (adds keys, never reads one).
"$vault" policy write portico-key-admin "$policies/key-admin.hcl"
echo "Vault policies and Kubernetes auth roles for signer, execution and account, and the policy"
echo "portico-key-admin for key administrators, are in place."
