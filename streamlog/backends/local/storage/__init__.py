"""Storage engine: segment files, partitions and the LMDB metadata environment."""
