# Vault policy of the execution service: venue account records (API key pair and
# signer key id), read only. It cannot read signing keys: it signs through the
# signer's gRPC API. `portico up` applies this same file to the dev Vault.
# On Kubernetes: policy `portico-execution`, bound to the service account portico-execution by
# roles/execution.json (roles/apply.sh).

# `+` is one path segment (the venue): the API-key secrets the account service keeps beside the records,
# under portico/venues/<venue>/api-keys/, are not readable.
path "secret/data/portico/venues/+/accounts/*" {
  capabilities = ["read"]
}
