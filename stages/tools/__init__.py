"""The user tools (``python -m stages.tools.<tool>``): not DVC stages, they run on what the stages made."""
