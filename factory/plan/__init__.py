"""Planning: what to run and why for each combination, backoff of failed results, sensor ticks.

Nothing is imported here, so that importing one module of the package stays cheap.
"""
