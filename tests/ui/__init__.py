"""Tests of ui/ (the Streamlit pages) under AppTest and a real browser."""
