# Vault policy of the account service.
# Venue account records and API key secrets: it writes them (new API keys, signing-key rotations) and reads
# them (to call the venue for the account).
# On Kubernetes: policy `portico-account`, bound to the service account portico-account by
# roles/account.json (roles/apply.sh).
path "secret/data/portico/venues/*" {
  capabilities = ["create", "read", "update"]
}

# The signer's keys: it may create a NEW signing key (RegisterSigningKey) through the signer's admin path,
# but never read, change or delete an existing key or policy ("create" only applies to paths that do not
# exist yet). Signatures still come only from the signer's gRPC API.
path "secret/data/portico/signer/keys/*" {
  capabilities = ["create"]
}
path "secret/metadata/portico/signer/keys/*" {
  capabilities = ["create", "update"]
}
path "secret/data/portico/signer/policies/*" {
  capabilities = ["create"]
}
