"""The micro-batcher: order, batching, cancellation, a failing item, the queue bound, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from catdog.web.batching import BatcherStopped, MicroBatcher, Overloaded


class Recorder:
    """run_batch that doubles numbers, remembers batch sizes, and can be held or made to fail."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.seen: list[int] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.gate.wait(10)
        if self.delay:
            time.sleep(self.delay)
        if any(i < 0 for i in items):
            raise ValueError("negative item")
        self.sizes.append(len(items))
        self.seen.extend(items)
        return [2 * i for i in items]


def make(run: Recorder, **kwargs: float) -> MicroBatcher[int, int]:
    options = {"max_batch_size": 8, "max_batch_wait_s": 0.02, "max_queue_size": 64, **kwargs}
    batcher: MicroBatcher[int, int] = MicroBatcher(run, **options)  # type: ignore[arg-type]
    batcher.start()
    return batcher


def test_results_come_back_to_the_right_caller_in_order() -> None:
    run = Recorder()
    batcher = make(run)

    async def main() -> list[int]:
        answers = await asyncio.gather(*(batcher.submit(i) for i in range(30)))
        return [result for result, _ in answers]

    assert asyncio.run(main()) == [2 * i for i in range(30)]
    batcher.stop()
    assert run.seen == list(range(30))  # FIFO: no request overtakes another


def test_concurrent_requests_share_runs_up_to_the_max_batch_size() -> None:
    run = Recorder(delay=0.05)
    batcher = make(run, max_batch_size=8)

    async def main() -> list[int]:
        answers = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
        return [stats.size for _, stats in answers]

    sizes = asyncio.run(main())
    batcher.stop()
    assert max(run.sizes) == 8 and sum(run.sizes) == 20
    assert len(run.sizes) <= 4  # 20 items in at most 4 runs, not 20
    assert set(sizes) <= set(run.sizes)


def test_a_lone_request_waits_at_most_the_max_wait() -> None:
    batcher = make(Recorder(), max_batch_wait_s=0.05)

    async def main() -> float:
        started = time.perf_counter()
        await batcher.submit(1)
        return time.perf_counter() - started

    assert asyncio.run(main()) < 0.5
    batcher.stop()


def test_a_failing_item_fails_alone_and_the_loop_lives_on() -> None:
    run = Recorder()
    batcher = make(run)

    async def main() -> list[object]:
        return await asyncio.gather(*(batcher.submit(i) for i in (1, -1, 3)), return_exceptions=True)

    first, bad, third = asyncio.run(main())
    assert first[0] == 2 and third[0] == 6  # type: ignore[index]
    assert isinstance(bad, ValueError)
    assert asyncio.run(batcher.submit(5))[0] == 10  # the loop still serves
    batcher.stop()


def test_a_run_that_raises_something_odd_never_kills_the_thread() -> None:
    calls = []

    def explode(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise KeyboardInterrupt  # not even a BaseException ends the loop
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(explode, max_batch_size=4, max_batch_wait_s=0, max_queue_size=8)
    batcher.start()
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(batcher.submit(1))
    assert asyncio.run(batcher.submit(2))[0] == 2
    batcher.stop()


def test_a_cancelled_request_is_dropped_before_it_runs() -> None:
    run = Recorder()
    run.gate.clear()  # hold the first run so the next items wait in the queue
    batcher = make(run, max_batch_size=1, max_batch_wait_s=0)

    async def main() -> int:
        holding = asyncio.ensure_future(batcher.submit(100))
        await asyncio.sleep(0.05)
        doomed = asyncio.ensure_future(batcher.submit(200))
        kept = asyncio.ensure_future(batcher.submit(300))
        await asyncio.sleep(0.05)
        doomed.cancel()
        await asyncio.sleep(0.01)  # the loop passes the cancellation on to the queued item
        run.gate.set()
        await holding
        result, _ = await kept
        return result

    assert asyncio.run(main()) == 600
    batcher.stop()
    assert 200 not in run.seen


def test_past_the_queue_bound_the_answer_is_overloaded_at_once() -> None:
    run = Recorder()
    run.gate.clear()
    batcher = make(run, max_batch_size=1, max_batch_wait_s=0, max_queue_size=3)
    futures = [batcher.submit_nowait(0)]
    time.sleep(0.05)  # the first is running (held)
    futures += [batcher.submit_nowait(i) for i in range(1, 4)]  # three waiting: the bound
    started = time.perf_counter()
    with pytest.raises(Overloaded) as info:
        for i in range(10):
            futures.append(batcher.submit_nowait(10 + i))
    assert time.perf_counter() - started < 0.05
    assert info.value.retry_after >= 1
    run.gate.set()
    assert [f.result(5)[0] for f in futures] == [2 * i for i in range(len(futures))]
    assert batcher.submit_nowait(7).result(5)[0] == 14  # full service once the load drops
    batcher.stop()


def test_stop_answers_everything_queued_then_refuses_new_work() -> None:
    run = Recorder(delay=0.01)
    batcher = make(run, max_batch_size=2)
    futures = [batcher.submit_nowait(i) for i in range(9)]
    batcher.stop()
    assert [f.result(0)[0] for f in futures] == [2 * i for i in range(9)]
    with pytest.raises(BatcherStopped):
        batcher.submit_nowait(1)


def test_the_knobs_are_checked() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch_size=0, max_batch_wait_s=0, max_queue_size=1)
