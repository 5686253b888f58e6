"""The app's screens: run, help (and history, by the history engineer)."""
