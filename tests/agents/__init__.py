"""Tests of agents/ (the LangGraph agent, its tools, threads and remote backends)."""
