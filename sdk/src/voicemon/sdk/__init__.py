"""The Python SDK a pipeline imports: ``voicemon.Client``. It depends on httpx and nothing else of ours.

>>> client = Client("http://127.0.0.1:8000", api_key="vm_...")          # doctest: +SKIP
>>> client.log_event("artifact_received", artifact_id="note-1")          # doctest: +SKIP
>>> with client.stage("transcription", artifact_id="note-1") as s:       # doctest: +SKIP
...     s.set(ai_model="asr-large", ai_cost_usd=0.004)
"""

from voicemon.sdk.client import Client, ClientStats
from voicemon.sdk.stage import StageScope

__all__ = ["Client", "ClientStats", "StageScope"]
