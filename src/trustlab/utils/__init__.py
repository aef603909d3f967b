"""Shared utilities: seeding, safe I/O, logging, progress bars, devices, environment."""
