"""Tests of model/ (engine, loader, state cache, packs) on tiny random-weight checkpoints."""
