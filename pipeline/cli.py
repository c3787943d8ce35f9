"""The `rarft` command: the pipeline's operations outside DVC.

Each area registers its commands in its own block below; heavy imports (torch,
transformers) stay inside the command bodies so `rarft --help` is instant.
"""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.splitlines()[0])

# --- download ---------------------------------------------------------------

# --- frames (extract) -------------------------------------------------------

# --- riq (build-riq, validate) ---------------------------------------------

# --- rewards and metrics (score, metrics) -----------------------------------

# --- model (make-model) -----------------------------------------------------

# --- train ------------------------------------------------------------------

# --- evaluate (evaluate, predict) -------------------------------------------


if __name__ == "__main__":
    app()
