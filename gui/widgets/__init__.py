"""Widgets of the main window: the experiment form, the curves and the run list."""
