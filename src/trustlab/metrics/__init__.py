"""Shared metrics (one file per topic; import from the submodules)."""
