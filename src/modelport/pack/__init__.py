"""Packaging and protection: integrity manifests."""

from modelport.pack.checksum import MANIFEST_NAME, sha256_file, verify_manifest, write_manifest

__all__ = ["MANIFEST_NAME", "sha256_file", "verify_manifest", "write_manifest"]
