"""The Dagster code location: per-platform asset chains, the matrix, jobs, sensors and `defs`."""

import warnings

import dagster as dg

# Pools, observable sources and dynamic-partition requests are marked beta/preview in Dagster
# 1.13; they are what this code location is built on, so the warnings would only be noise for
# users of the CLI and the UI.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
