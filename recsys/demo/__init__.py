"""The Gradio demo's handlers, views, text pages and title search (app.py wires them to components)."""
