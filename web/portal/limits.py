"""Per-client rate limits of the portal's requests, in memory (one portal process; the per-address and
per-IP limits are counted in the store, so they hold across restarts and processes)."""

from __future__ import annotations

import threading
import time
from collections import deque


class ClientLimiter:
    """At most `limit` events per client address in a sliding `window` of seconds."""

    def __init__(self, limit: int, window: float = 3600.0, *, clients: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.clients = clients
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        """Count one event for `client` unless it is over its limit."""
        now = time.monotonic()
        with self._lock:
            events = self._events.get(client)
            if events is None:
                if len(self._events) >= self.clients:  # bounded memory under a spray of addresses
                    self._prune(now)
                events = self._events.setdefault(client, deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True

    def _prune(self, now: float) -> None:
        for client in [c for c, e in self._events.items() if not e or e[-1] <= now - self.window]:
            del self._events[client]
        if len(self._events) >= self.clients:
            self._events.clear()
