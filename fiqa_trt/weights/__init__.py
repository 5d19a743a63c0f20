"""Known models: one record per model file (checksum, source, licence, preprocessing)."""
