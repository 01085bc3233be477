"""MicroBatcher: concurrent async calls -> batched ``model.score`` calls in worker threads.

Callers on the event loop put items on a bounded queue (full: :class:`GuardOverloaded` at once).
One collector task hands batches of up to ``max_batch_size`` items to ``workers`` worker threads
(never the event loop): whenever a worker is free it takes what is queued (shared fairly between
the free workers), waiting at most ``max_wait_ms`` after the first item for more, and runs ONE
``score`` call per model. While the workers are busy, new calls queue up and form the next
batches. Each caller awaits its own future: a failure reaches the caller(s) whose item failed as
a :class:`GuardError` (a failed batch is retried item by item to find them), and a caller that
times out or is cancelled does not disturb the others.

Under load, two workers keep two cores busy with whole forward passes instead of synchronising
threads inside each small one; they share the model's intra-op threads, so a lone call still gets
them all. A model's scores do not depend on the batch, so neither does a verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from guard_plugin.errors import GuardError, GuardOverloaded
from guard_plugin.model import Score


class ScoresPairs(Protocol):
    def score(self, pairs: Sequence[tuple[str, str | None]]) -> list[Score]: ...


@dataclass
class _Pending:
    model: ScoresPairs
    pair: tuple[str, str | None]
    future: asyncio.Future[Score]


class MicroBatcher:
    """Bounded queue + one collector task + ``workers`` worker threads. Bound to the loop that
    first uses it."""

    def __init__(
        self,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 0.0,
        max_queue: int = 2048,
        workers: int = 1,
    ):
        if workers < 1:
            raise ValueError("a MicroBatcher needs at least one worker")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.workers = workers
        self._running: set[asyncio.Task[None]] = set()  # batches in the workers now
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="harmaug-guard")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Pending] | None = None
        self._collector: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0  # score calls run so far (observability and tests)

    def enqueue(self, model: ScoresPairs, pair: tuple[str, str | None]) -> asyncio.Future[Score]:
        """Queue one item for ``model`` (raises :class:`GuardOverloaded` at once when full);
        the future resolves once its batch has run. Cancel it to withdraw the item."""
        queue = self._queue_for_running_loop()
        future: asyncio.Future[Score] = asyncio.get_running_loop().create_future()
        try:
            queue.put_nowait(_Pending(model, pair, future))
        except asyncio.QueueFull:
            raise GuardOverloaded(
                f"guard queue full ({self.max_queue} items waiting); try again later"
            ) from None
        return future

    async def submit(self, model: ScoresPairs, pair: tuple[str, str | None]) -> Score:
        """Queue one item and wait for its score."""
        return await self.enqueue(model, pair)

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def aclose(self) -> None:
        """Stop the collector, fail what is still queued, release the worker thread."""
        self._closed = True
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
        self._fail_queued(GuardError("guard closed"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _queue_for_running_loop(self) -> asyncio.Queue[_Pending]:
        if self._closed:
            raise GuardError("guard closed")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed() and self._loop.is_running():
                raise GuardError("a Guard serves one event loop; create one Guard per loop")
            self._loop = loop
            self._queue = asyncio.Queue(maxsize=self.max_queue)
            self._collector = None
            self._running = set()
        if self._collector is None or self._collector.done():
            self._collector = loop.create_task(self._collect(), name="harmaug-guard-batcher")
        assert self._queue is not None
        return self._queue

    async def _collect(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        idle = asyncio.Semaphore(self.workers)
        running = self._running

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            idle.release()

        try:
            while True:
                await idle.acquire()
                batch = [await queue.get()]
                self._drain(queue, batch)
                if len(batch) < self.max_batch_size:
                    # Let callers that are already runnable enqueue (sleep(0) is one loop turn);
                    # wait longer only if configured. Under load, batches also form while the
                    # workers run.
                    await asyncio.sleep(self.max_wait_s)
                    self._drain(queue, batch)
                live = [item for item in batch if not item.future.done()]
                if not live:
                    idle.release()
                    continue
                self.batches += 1
                task = loop.create_task(self._run(loop, live))
                running.add(task)
                task.add_done_callback(finished)
        finally:
            for task in list(running):
                task.cancel()

    async def _run(self, loop: asyncio.AbstractEventLoop, live: list[_Pending]) -> None:
        """Score one batch in a worker thread and settle its callers' futures."""
        try:
            results: list[Score | Exception] = await loop.run_in_executor(
                self._executor, _score_by_model, live
            )
        except asyncio.CancelledError:
            for item in live:
                _settle(item, error=GuardError("guard closed"))
            raise
        except Exception as exc:  # keep the collector alive whatever happens
            results = [exc] * len(live)
        for item, result in zip(live, results, strict=True):
            if isinstance(result, Score):
                _settle(item, score=result)
            else:
                error = GuardError(f"guard scoring failed: {result!r}")
                error.__cause__ = result
                _settle(item, error=error)

    def _share(self, queue: asyncio.Queue[_Pending], batch: list[_Pending]) -> int:
        """Items this batch takes: what is waiting, split evenly between the idle workers
        (this one included), at most ``max_batch_size``."""
        idle = max(1, self.workers - len(self._running))
        waiting = len(batch) + queue.qsize()
        return min(self.max_batch_size, -(-waiting // idle))

    def _drain(self, queue: asyncio.Queue[_Pending], batch: list[_Pending]) -> None:
        share = self._share(queue, batch)
        while len(batch) < share:
            try:
                batch.append(queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    def _fail_queued(self, error: GuardError) -> None:
        while self._queue is not None and not self._queue.empty():
            _settle(self._queue.get_nowait(), error=error)


def _score_by_model(batch: list[_Pending]) -> list[Score | Exception]:
    """Runs in the worker thread: one ``score`` call per model in the batch (normally one).

    When a batched call fails, its items are rescored one by one, so one bad input fails only
    its own caller.
    """
    results: list[Score | Exception] = [Exception("not scored")] * len(batch)
    models: dict[int, ScoresPairs] = {}
    for item in batch:
        models.setdefault(id(item.model), item.model)
    for key, model in models.items():
        members = [i for i, item in enumerate(batch) if id(item.model) == key]
        try:
            scores = model.score([batch[i].pair for i in members])
        except Exception:
            for i in members:
                results[i] = _score_one(model, batch[i].pair)
            continue
        for i, score in zip(members, scores, strict=True):
            results[i] = score
    return results


def _score_one(model: ScoresPairs, pair: tuple[str, str | None]) -> Score | Exception:
    try:
        return model.score([pair])[0]
    except Exception as exc:
        return exc


def _settle(
    item: _Pending, *, score: Score | None = None, error: BaseException | None = None
) -> None:
    if item.future.done():  # the caller timed out or was cancelled
        return
    if error is not None:
        item.future.set_exception(error)
    else:
        item.future.set_result(score)  # type: ignore[arg-type]
