"""Feldspar app package."""
