# Vault policy of the execution service: venue account records (API key pair and
# signer key id), read only. It cannot read signing keys: it signs through the
# signer's gRPC API. `portico up` applies this same file to the dev Vault.

path "secret/data/portico/venues/*" {
  capabilities = ["read"]
}
