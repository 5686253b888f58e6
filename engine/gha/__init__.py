"""GitHub Actions front end: workflow files -> the engine's pipeline model (SPEC §11)."""
