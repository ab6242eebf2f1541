"""Pattern fusions, one rule per file, each wrapped in a pass of its own."""
