"""Decode the next batches in threads while the model runs on the current one."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetched(
    batches: Iterable[list[T]], load: Callable[[T], R], *, workers: int = 2, depth: int = 2
) -> Iterator[list[R]]:
    """Yield [load(item) for item in batch] per batch, keeping `depth` batches loading ahead."""
    source = iter(batches)
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def submit() -> list[Future[R]] | None:
            batch = next(source, None)
            return None if batch is None else [pool.submit(load, item) for item in batch]

        queue = deque(f for f in (submit() for _ in range(depth)) if f is not None)
        while queue:
            futures = queue.popleft()
            following = submit()
            if following is not None:
                queue.append(following)
            yield [future.result() for future in futures]


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
