"""Showing a run: the JSON record, figures and the self-contained HTML page."""
