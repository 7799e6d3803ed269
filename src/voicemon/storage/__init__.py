"""Storage: SQLAlchemy Core tables, queries and migrations. SQL lives here and nowhere else."""

from voicemon.storage.database import Database

__all__ = ["Database"]
