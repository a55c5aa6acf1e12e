"""What an image carries out: SBOM, provenance, signed attestations, quarantine, verification.

Nothing is imported here, so that importing one module of the package stays cheap.
"""
