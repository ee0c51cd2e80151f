"""Runnable example pipelines: copy one to start your own."""
