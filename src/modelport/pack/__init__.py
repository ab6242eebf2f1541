"""Packaging and protection: integrity manifests, model cards, and bundles that serve directly.

``checksum`` writes and verifies ``manifest.json`` (sha256 per file), which ``serve`` checks before
a model loads; ``card`` renders ``MODEL_CARD.md``; ``bundle`` packs a repository into one
``.tar.gz`` and opens one safely for serving::

    from modelport.pack import open_bundle, pack
    pack("deploy-out/repository", "model.tar.gz", report="deploy-out/report.json")
    with open_bundle("model.tar.gz") as repository:
        ...  # a verified repository folder, removed on exit
"""

from modelport.pack.bundle import PackResult, extract_bundle, is_bundle, open_bundle, pack, pinned_requirements
from modelport.pack.card import CardInfo, read_report, render_card
from modelport.pack.checksum import (
    MANIFEST_NAME,
    FileDigest,
    Manifest,
    Mismatch,
    read_manifest,
    sha256_file,
    verify_manifest,
    write_manifest,
)

__all__ = [
    "MANIFEST_NAME",
    "CardInfo",
    "FileDigest",
    "Manifest",
    "Mismatch",
    "PackResult",
    "extract_bundle",
    "is_bundle",
    "open_bundle",
    "pack",
    "pinned_requirements",
    "read_manifest",
    "read_report",
    "render_card",
    "sha256_file",
    "verify_manifest",
    "write_manifest",
]
