"""Widgets of the run screen: stage tree, log view, header."""
