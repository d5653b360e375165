"""Feldspar retrieval package."""
