"""Compatibility records: the model, local and S3 stores, the records index, dead letters,
retention.

Nothing is imported here, so that importing one module of the package stays cheap.
"""
