# Vault policy of the signer service: signing keys and their policies, read only.
# The signer cannot read venue credentials, and no other service can read this path.
# `portico up` applies this same file to the dev Vault.
# On Kubernetes: policy `portico-signer`, bound to the service account portico-signer by roles/signer.json
# (roles/apply.sh).

path "secret/data/portico/signer/keys/*" {
  capabilities = ["read"]
}

path "secret/data/portico/signer/policies/*" {
  capabilities = ["read"]
}
