"""Persistent run storage (SQLite)."""

from engine.store.runstore import ACTIVE_STATUSES, STATUSES, RunStore, default_db_path

__all__ = ["ACTIVE_STATUSES", "STATUSES", "RunStore", "default_db_path"]
