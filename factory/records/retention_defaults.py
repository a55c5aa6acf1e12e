"""The retention defaults, apart from factory/records/retention.py so that `factory --help` can
show them
without importing the registry client."""

DEFAULT_KEEP = 5
DEFAULT_EVIDENCE_DAYS = 90
