"""voicemon: observability and operations for multi-tenant AI voice-note pipelines.

This package comes from the ``voicemon-client`` distribution, which holds the SDK (``voicemon.Client``,
httpx only). The ``voicemon`` distribution, the server, adds its subpackages beside ``sdk``.

>>> from voicemon import Client
>>> Client.__module__
'voicemon.sdk.client'
"""

from __future__ import annotations

from pkgutil import extend_path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voicemon.sdk import Client

# In a development checkout the two distributions' files live in two folders: this finds the server's.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # ``Client`` is imported on first use: the server's command line imports this package too, and
    # httpx would double the time ``voicemon --help`` takes.
    if name == "Client":
        from voicemon.sdk import Client  # noqa: PLC0415

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
