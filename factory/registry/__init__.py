"""The distribution-v2 / OCI registry: a small client, and the multi-arch publish gate.

Nothing is imported here, so that importing one module of the package stays cheap.
"""
