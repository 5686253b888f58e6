"""pipedeck's engine: loads pipelines and runs them. Never imports textual or rich."""

__version__ = "0.1.0"
