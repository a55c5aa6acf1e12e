"""Local services for the embedded default: engine, registry, broker, qemu, base images, processes.

Nothing is imported here, so that importing one module of the package stays cheap.
"""
