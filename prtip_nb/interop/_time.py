"""Epoch times from nmap and masscan files, bounded: a corrupt ``endtime`` of 40 digits is
no time, not an OverflowError three modules later."""

from __future__ import annotations

from datetime import UTC, datetime

#: Epoch seconds a timestamp column and datetime can both hold (before year 10000).
MAX_EPOCH = 253_402_300_799


def epoch_us(epoch: str | None) -> int | None:
    """Epoch seconds (text) as µs, or None when absent, not a number or out of range."""
    if not epoch or not epoch.isdigit() or len(epoch) > 12 or int(epoch) > MAX_EPOCH:
        return None
    return int(epoch) * 1_000_000


def epoch_time(epoch: str | None) -> datetime | None:
    us = epoch_us(epoch)
    return None if us is None else datetime.fromtimestamp(us // 1_000_000, UTC)
