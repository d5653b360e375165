"""Adversarial tests across layers: control strings stay text on every path."""
