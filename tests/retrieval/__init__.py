"""Tests of retrieval/ (ingest, chunking, search) on a real Chroma store."""
