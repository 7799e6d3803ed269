"""One validated settings object, read from ``VOICEMON_*`` environment variables and CLI flags."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from voicemon.domain.periods import Period
from voicemon.domain.timeutil import DAY_MS, HOUR_MS, SECOND_MS


class Settings(BaseSettings):
    """Every knob of a voicemon process. Durations carry their unit in the name."""

    model_config = SettingsConfigDict(env_prefix="VOICEMON_", extra="ignore", frozen=True)

    database_url: str = "sqlite:///./voicemon.db"
    retry_webhook_url: str | None = None
    retry_webhook_secret: SecretStr | None = None
    stuck_after_s: int = Field(default=300, ge=1)
    event_retention_h: int = Field(default=48, ge=1)
    hourly_retention_d: int = Field(default=7, ge=1)
    daily_retention_d: int = Field(default=90, ge=1)
    counter_retention_h: int = Field(default=2, ge=2)
    artifact_retention_d: int = Field(default=90, ge=1)
    job_run_retention_d: int = Field(default=30, ge=1)
    # UTC cron schedules of the jobs (SPEC 8).
    # Every minute: the rows of each ended minute of the hours answered live (decision 0025).
    schedule_aggregate_minutes: str = "* * * * *"
    schedule_aggregate_hourly: str = "30 * * * *"
    schedule_aggregate_daily: str = "30 1 * * *"
    schedule_cleanup_snapshots: str = "30 4 * * 0"
    schedule_cleanup_events: str = "0 5 * * 0"
    schedule_evaluate_alerts: str = "*/5 * * * *"
    # PostgreSQL: the daily partitions of raw events are created this many days ahead (SPEC 19).
    schedule_partition_events: str = "15 * * * *"
    event_partitions_ahead_d: int = Field(default=3, ge=1, le=60)
    # Alerts (SPEC 14, 15): history kept this long after resolution; notification channels, each optional.
    alert_retention_d: int = Field(default=90, ge=1)
    alert_webhook_url: str | None = None
    alert_webhook_secret: SecretStr | None = None
    alert_slack_url: str | None = None
    alert_alertmanager_url: str | None = None
    # A running job whose lease ran out is taken as crashed and recorded as failed.
    job_lease_s: int = Field(default=900, ge=10)
    # How often the scheduler looks for due work.
    scheduler_poll_s: float = Field(default=5.0, gt=0)
    # Rows deleted per retention transaction.
    cleanup_batch_rows: int = Field(default=5000, ge=1)
    # Delivery of retry commands (SPEC 9): attempts, exponential backoff with jitter, per-request timeout.
    retry_delivery_max_attempts: int = Field(default=8, ge=1)
    retry_backoff_base_s: float = Field(default=1.0, gt=0)
    retry_backoff_cap_s: float = Field(default=300.0, gt=0)
    retry_webhook_timeout_s: float = Field(default=5.0, gt=0)
    # How long one delivery may take before another worker may try the same entry again.
    outbox_lease_s: float = Field(default=60.0, gt=0)
    # Settled outbox entries (delivered, skipped, dead) are deleted this long after they settled.
    outbox_retention_d: int = Field(default=30, ge=1)
    dispatcher_poll_s: float = Field(default=0.5, gt=0)
    # How long a verified API key is trusted before it is looked up again (revocation delay).
    key_cache_s: float = Field(default=2.0, ge=0)
    # A client that sends nothing for this long in the middle of a request body gets 408.
    body_idle_timeout_s: float = Field(default=10.0, gt=0)
    # voicemon serve: connections beyond this many are answered 503; idle keep-alive connections are
    # closed after keep_alive_s; a connection that has not sent a whole request head within
    # header_timeout_s is closed.
    max_connections: int = Field(default=1000, ge=1)
    keep_alive_s: int = Field(default=5, ge=1)
    header_timeout_s: float = Field(default=10.0, gt=0)
    # Largest group of events the writer commits in one transaction.
    writer_max_events: int = Field(default=5000, ge=1)
    # The dashboard (SPEC 16): the key that signs its session cookies (give every replica the same one;
    # without it each process makes its own, and sessions end when it restarts), and how long one lasts.
    session_secret: SecretStr | None = None
    # /metrics without a key (for a Prometheus on a trusted network); otherwise a viewer or staff key.
    metrics_public: bool = False
    # /metrics: per-organization families (the 100 busiest organizations), off by default.
    metrics_org_labels: bool = False
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)

    @property
    def stuck_after_ms(self) -> int:
        return self.stuck_after_s * SECOND_MS

    @property
    def event_retention_ms(self) -> int:
        return self.event_retention_h * HOUR_MS

    @property
    def hourly_retention_ms(self) -> int:
        return self.hourly_retention_d * DAY_MS

    @property
    def daily_retention_ms(self) -> int:
        return self.daily_retention_d * DAY_MS

    def snapshot_retention_ms(self, period: Period) -> int:
        """How long rows of ``period`` (and the blocks that merge them) are kept."""
        return self.hourly_retention_ms if period is Period.HOURLY else self.daily_retention_ms
