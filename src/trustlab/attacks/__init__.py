"""Shared attacks (one file per topic; import from the submodules)."""
