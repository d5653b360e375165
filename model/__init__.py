"""Granite 4.0 on torch + transformers: catalog, loader, prompts, generation and hybrid state reuse.

Imports nothing from the app, retrieval, agents or UI layers."""
