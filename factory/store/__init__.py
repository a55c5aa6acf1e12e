"""The manifest store: its models, loading and validation, Dockerfile rendering and rules, content
keys.

Nothing is imported here, so that importing one module of the package stays cheap.
"""
