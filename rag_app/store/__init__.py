"""Where retrieval data lives: a BM25 index (JSON, checksummed) and Chroma collections."""
