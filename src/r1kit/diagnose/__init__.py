"""Run diagnostics: what a run will need before it starts, and what its logs say once it has run."""
