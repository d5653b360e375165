"""`feldspar.webui`: the Streamlit host side of the web app (the pages themselves are feldspar.ui).

main (the Streamlit entry script) · services (what the pages call: engine, agents, threads)
· library (documents and packs) · jobs (background jobs with progress) · uploads (checked
uploads) · chat and models (plain-dict facts for the views). Imports the core and the lower
layers, never the CLI or the server.
"""
