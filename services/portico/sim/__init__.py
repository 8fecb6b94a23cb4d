"""A Syndr-compatible venue simulator: a pure matching core, its catalogue and a market maker."""
