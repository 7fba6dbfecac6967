"""The CNN studies pipeline: DVC stages (``python -m stages.<stage>``), user tools (``python -m stages.tools.<tool>``)
and their library. Importing it, or any of its modules, only imports."""
