"""Venue adapters: each venue's wire protocol behind the Portico contracts."""
