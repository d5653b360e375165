"""Tests of app/ (the core and its front ends: cli, serve, webui)."""
