"""Worker processes: `factory run`'s local pool, and the several-hosts shape (Celery settings,
the per-pool worker, and asking workers what they do).

Nothing is imported here, so that importing one module of the package stays cheap.
"""
