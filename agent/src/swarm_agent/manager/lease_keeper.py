"""Renewal of a manager's etcd leases (the leader's, its sessions', its record's) from a thread of its own.

Renewed from the manager's event loop, a lease lapsed whenever the loop was busy for longer than its TTL: at
2,500 nodes a leader lost its 3 s lease every half minute, and each new term started its control loop over.
Raft leaders (SwarmKit's among them) send their heartbeats apart from their other work in the same way.

A loop that is not just busy but stuck must still lose its leases: the thread asks the loop to answer every
PING seconds and renews nothing once the loop has been silent for ``patience`` seconds, so a hung manager lets
go of its leadership and sessions ``patience`` plus a TTL after it stopped.
"""

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from ..loop_watch import LoopWatch
from ..store.etcd import EtcdClient, EtcdError

log = logging.getLogger(__name__)

RENEW_EVERY = 1.0  # seconds between renewals of each lease
PING = 0.25  # seconds between the thread's questions to the event loop
LOOP_PATIENCE = 10.0  # seconds of event loop silence before renewals stop


@dataclass
class _Held:
    expires: float  # time.monotonic() by which the lease lapses unless renewed again
    renew_at: float
    gone: bool = False  # etcd said the lease no longer exists


class LeaseKeeper:
    def __init__(self, etcd: EtcdClient, patience: float = LOOP_PATIENCE) -> None:
        # A client of its own, used only on the thread's event loop; the manager adds endpoints it learns.
        self.etcd = etcd.sibling(etcd.endpoints)
        self.patience = patience
        self._held: dict[int, _Held] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: LoopWatch | None = None

    def start(self) -> None:
        """Start renewing; the calling thread's running event loop is the one that must keep answering."""
        self._watch = LoopWatch(asyncio.get_running_loop())
        self._stop.clear()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), name="lease-keeper", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def hold(self, lease: int, ttl: float) -> None:
        """Renew ``lease`` (just granted, or just renewed, with ``ttl`` seconds) from now on."""
        clock = time.monotonic()
        with self._lock:
            self._held[lease] = _Held(expires=clock + ttl, renew_at=clock + RENEW_EVERY)

    def drop(self, lease: int) -> None:
        with self._lock:
            self._held.pop(lease, None)

    def lost(self, lease: int) -> bool:
        """Whether ``lease`` is gone: etcd said so, or no renewal got through within its TTL."""
        with self._lock:
            held = self._held.get(lease)
        return held is None or held.gone or time.monotonic() >= held.expires

    async def _run(self) -> None:
        assert self._watch is not None
        silent = False
        try:
            while not self._stop.is_set():
                clock = time.monotonic()
                with self._lock:
                    held = list(self._held)
                    due = [lease for lease, h in self._held.items() if not h.gone and h.renew_at <= clock]
                if self._watch.silent_for() <= self.patience:
                    silent = False
                    await asyncio.gather(*(self._renew(lease) for lease in due))
                elif held and not silent:
                    silent = True
                    log.warning("event loop silent for %.1f s: leases %s are no longer renewed",
                                self._watch.silent_for(), ", ".join(f"{lease:x}" for lease in held))
                if not self._watch.ask():  # the manager's loop is closed: nothing left to renew for
                    return
                await asyncio.sleep(PING)
        finally:
            await self.etcd.close()

    async def _renew(self, lease: int) -> None:
        sent = time.monotonic()
        try:
            ttl = await self.etcd.lease_keepalive(lease)
        except EtcdError as exc:
            log.warning("lease %x could not be renewed: %s", lease, exc)
            ttl = None
        with self._lock:
            held = self._held.get(lease)
            if held is None:
                return
            held.renew_at = time.monotonic() + RENEW_EVERY
            if ttl is None:
                return
            if ttl <= 0:
                held.gone = True
            else:
                # The renewal took effect somewhere between sending and answering: count from the sending.
                held.expires = sent + ttl
