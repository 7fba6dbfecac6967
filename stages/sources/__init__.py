"""Data sources: download and extract (fetch), the raw formats and their readers, generated sample data."""
