"""The operator's CLI, `oomdump` (also `kubectl oomdump`): find the dumps oomdump captured in
a bucket or a copied DUMP_DIR, download them, and read or compare them without Go."""
