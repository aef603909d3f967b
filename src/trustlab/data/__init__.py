"""Shared data (one file per topic; import from the submodules)."""
