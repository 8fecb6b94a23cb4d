"""Reference data: instrument sync, normalised records with change history, filtered listing."""
