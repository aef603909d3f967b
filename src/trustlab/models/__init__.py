"""Shared models (one file per topic; import from the submodules)."""
