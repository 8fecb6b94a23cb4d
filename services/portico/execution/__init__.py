"""Order execution: validated, signed, journaled orders at the venue, and the account's order and fill streams."""
