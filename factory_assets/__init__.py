"""The Dagster code location: per-platform asset chains, the matrix, jobs and `defs`."""
