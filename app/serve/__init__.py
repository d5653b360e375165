"""`feldspar.serve`: the OpenAI-compatible HTTP front end, one module per concern.

protocol (request models, errors, SSE) · errors (exceptions as OpenAI error objects) · gate (API key, body size) · lanes (one queue per
engine) · models (what a served model does per request) · endpoints (the thin FastAPI routes)
· server (the app built from Settings through feldspar.compose) · run (uvicorn, foreground or
in a thread). Imports the core and the lower layers, never the CLI or the web UI.
"""
