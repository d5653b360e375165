"""Feldspar bench package."""
