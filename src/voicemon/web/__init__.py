"""The web dashboard (SPEC 16): server-rendered pages on the same service layer as the API, mounted at
``/`` beside ``/v1``. Every page's figures come from the use cases the API calls, with the caller the
session's key, so an organization's viewer sees only its organization here as there."""

from voicemon.web.app import install_web

__all__ = ["install_web"]
