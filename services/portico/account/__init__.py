"""The account service: positions, margin, collateral, deposits, venue API keys and signing-key registration."""
