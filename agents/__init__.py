"""Feldspar agents package."""
