"""Persistent run storage (SQLite) and metric export."""

from engine.store.metrics_csv import write_metrics_csv
from engine.store.runstore import ACTIVE_STATUSES, RESUMABLE_STATUSES, STATUSES, RunStore, default_db_path

__all__ = ["ACTIVE_STATUSES", "RESUMABLE_STATUSES", "STATUSES", "RunStore", "default_db_path", "write_metrics_csv"]
