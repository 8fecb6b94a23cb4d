# Vault policy of the execution service: venue account records (API key pair and
# signer key id), read only. It cannot read signing keys: it signs through the
# signer's gRPC API. `portico up` applies this same file to the dev Vault.
# On Kubernetes: policy `portico-execution`, bound to the service account portico-execution by
# roles/execution.json (roles/apply.sh).

path "secret/data/portico/venues/*" {
  capabilities = ["read"]
}
