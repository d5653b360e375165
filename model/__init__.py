"""Feldspar model package."""
