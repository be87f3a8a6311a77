"""The Gradio demo: the page's panels (`panels`), their handlers and views, text pages and title search."""
