"""Region proposals: selective search, MultiBox and the per-image proposal cache."""
