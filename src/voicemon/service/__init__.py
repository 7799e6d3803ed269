"""Use cases: domain rules and storage, joined in transactions."""

from voicemon.service.container import Services

__all__ = ["Services"]
