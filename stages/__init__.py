"""Stage scripts of the CNN studies pipeline (one module per DVC stage, plus registries)."""
