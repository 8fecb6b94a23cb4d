"""Soak run (on demand, not collected by pytest): `python -m tests.soak.soak`, `make soak`."""
