"""Thin DVC stage entry points: parse paths, load params, call pipeline.*. Run as `python -m stages.<name>`."""
