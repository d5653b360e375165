"""The Streamlit app's pages and small view functions (chat, documents, packs, models).

Pages get everything they act on from ``feldspar.ui.context.services()``, registered by the
app's entry script (app/webui/main.py); they hold no business logic and never import the app.
"""
