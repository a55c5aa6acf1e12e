"""One combination's build: the Docker Engine as Factory uses it, the stage pipeline, prewarm,
engine pruning.

Nothing is imported here, so that importing one module of the package stays cheap.
"""
