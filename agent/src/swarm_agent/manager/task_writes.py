"""Task status writes from many nodes' reports, coalesced into few etcd transactions.

At a thousand nodes, one transaction per reported task state was the manager's largest cost; one per report
still is many small ones. Reports arriving within a few milliseconds share transactions, and each report is
answered only once the transaction holding its tasks is committed, so a node never takes a state for stored
that was lost.

The manager's cache learns of these writes only through its etcd watch, which trails them under load: a node's
next report (starting, then running, half a second apart) would be checked against the state before its last
one and refused as stale. So the tasks written here are kept until the cache has caught up with them.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence

from ..api.models import Task
from ..store.state import MAX_TXN_OPS, Store

log = logging.getLogger(__name__)


class TaskWrites:
    """A write-behind queue of task updates, each guarded by the revision its task was read at."""

    def __init__(self, store: Store, cached_revision: Callable[[], int], delay: float = 0.005,
                 batch: int = MAX_TXN_OPS) -> None:
        self._store = store
        self._cached_revision = cached_revision  # the revision the manager's cache holds
        self._written: dict[str, Task] = {}  # tasks written here that the cache may not hold yet
        self._delay = delay  # how long the first update of a batch waits for others
        self._batch = batch
        self._queue: list[tuple[Task, asyncio.Future[bool]]] = []
        self._full = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    def latest(self, cached: Task) -> Task:
        """The newer of the cached task and the one last written here."""
        written = self._written.get(cached.ID)
        return written if written is not None and written.Version.Index > cached.Version.Index else cached

    async def write(self, tasks: Sequence[Task]) -> list[bool]:
        """Write ``tasks``; for each, whether it was written (False: somebody wrote it since it was read)."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in tasks]
        self._queue.extend(zip(tasks, futures))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        if len(self._queue) >= self._batch:
            self._full.set()
        return list(await asyncio.gather(*futures))

    def _take(self) -> list[tuple[Task, asyncio.Future[bool]]]:
        """The next batch: one update per task, since etcd refuses a transaction writing a key twice (a node
        that failed over may send a state again while the first report is still queued)."""
        batch: list[tuple[Task, asyncio.Future[bool]]] = []
        rest: list[tuple[Task, asyncio.Future[bool]]] = []
        ids: set[str] = set()
        for entry in self._queue:
            if entry[1].done():  # its report was abandoned (the node hung up)
                continue
            if len(batch) < self._batch and entry[0].ID not in ids:
                ids.add(entry[0].ID)
                batch.append(entry)
            else:
                rest.append(entry)
        self._queue = rest
        return batch

    async def _flush(self) -> None:
        while self._queue:
            if len(self._queue) < self._batch:
                self._full.clear()
                try:
                    await asyncio.wait_for(self._full.wait(), self._delay)
                except asyncio.TimeoutError:
                    pass
            batch = self._take()
            if not batch:
                continue
            try:
                refused = await self._store.update_each([task for task, _ in batch])
            except Exception as exc:  # etcd unreachable: every report in the batch fails, none is acknowledged
                log.warning("could not write %d task states: %s", len(batch), exc)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            cached = self._cached_revision()
            self._written = {tid: t for tid, t in self._written.items() if t.Version.Index > cached}
            for i, (task, future) in enumerate(batch):
                if i not in refused:
                    self._written[task.ID] = task
                if not future.done():
                    future.set_result(i not in refused)
