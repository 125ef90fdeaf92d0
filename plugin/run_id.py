"""Run ids and timestamps (stdlib only: the dormant plugin hands a run id to xdist workers before it knows
whether the session holds any vq-benchmark case)."""

from __future__ import annotations

import datetime as dt
import secrets


def new_run_id() -> str:
    """Sortable and unique enough across a cluster: UTC time plus 6 random hex digits."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
