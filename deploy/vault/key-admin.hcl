# Vault policy of a key administrator (`portico signer keys create|import|list-addresses|set-policy`).
# It can add keys and change their policies, and list key ids with their addresses (kept in each key's
# custom metadata), but never read a private key or overwrite one ("create" only applies to paths that do
# not exist yet). `portico up` mints a token with this policy for the dev stack (state file: vault.key_admin_token).

path "secret/data/portico/signer/keys/*" {
  capabilities = ["create"]
}

path "secret/metadata/portico/signer/keys/*" {
  capabilities = ["create", "update", "read", "list"]
}

path "secret/data/portico/signer/policies/*" {
  capabilities = ["create", "update"]
}
