"""voicemon: observability and operations for multi-tenant AI voice-note pipelines."""

__version__ = "0.1.0"

from voicemon.sdk import Client

__all__ = ["Client", "__version__"]
