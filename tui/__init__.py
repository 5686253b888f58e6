"""pipedeck's front ends: the command line, headless reporters and the Textual app."""
