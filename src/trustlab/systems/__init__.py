"""One folder per paper. Each ``systems/<name>/__init__.py`` defines ``SYSTEM`` (a :class:`SystemSpec`)."""
