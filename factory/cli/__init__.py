"""The `factory` command, one module per command group.

Nothing is imported here, so that importing one module of the package stays cheap.
"""
