"""Figures and tables drawn from the reports."""
