"""Document folders into Chroma: loaders, chunking, embeddings, manifest, incremental sync and hybrid search.

Imports nothing from the app, model, agents or UI layers."""
