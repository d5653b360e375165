"""Feldspar ui package."""
