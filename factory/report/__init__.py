"""What people and tools read: the matrix, its JSON/HTML report, build metrics, alerts.

Nothing is imported here, so that importing one module of the package stays cheap.
"""
