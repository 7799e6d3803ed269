"""The simulated pipeline: realistic traffic for the demo, tests and benchmarks."""

from voicemon.sim.model import Incident, SimConfig
from voicemon.sim.pipeline import RetryOrder, Simulator
from voicemon.sim.store import DerivedStore
from voicemon.sim.webhook import RetryWebhook

__all__ = ["DerivedStore", "Incident", "RetryOrder", "RetryWebhook", "SimConfig", "Simulator"]
