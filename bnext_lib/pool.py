"""A pool of worker processes for independent jobs (training runs, landscapes): :func:`parallel_map`.

On a CPU, two processes of one thread each train ~1.5x more images per second than one process with two threads
(small convolutions parallelise poorly), so the run cache trains independent runs side by side
(:func:`bnext_lib.runs.run_many`). On a machine with several GPUs each worker gets its own
(``CUDA_VISIBLE_DEVICES``, round robin). Workers are spawned (forking after torch has started threads is unsafe); what
they print is relayed to the parent line by line and printed there once, so that under Jupyter it shows in the
notebook and not also on the server's terminal.
"""
from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing as mp
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Sequence

import torch

from .progress import tqdm_class

__all__ = ["parallel_map"]


class _Lines(io.TextIOBase):
    """A text stream that hands whole lines (partial ones on ``flush``) to ``sink(text)``; ``fileno`` is the
    stream it stands in for, for code that needs a real file."""

    def __init__(self, sink: Callable[[str], Any], real):
        super().__init__()
        self.sink, self.real, self.buf = sink, real, ""

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return getattr(self.real, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        self.buf += text
        if "\n" in self.buf:
            lines, _, self.buf = self.buf.rpartition("\n")
            self.sink(lines + "\n")
        return len(text)

    def flush(self) -> None:
        if self.buf:
            text, self.buf = self.buf, ""
            self.sink(text)

    def fileno(self) -> int:
        return self.real.fileno()


def _init_worker(threads: int | None, lines, gpus: int = 0, counter=None) -> None:
    # A spawned worker's stdout/stderr are the parent's file descriptors: a terminal, or under Jupyter a pipe
    # that ipykernel shows in the notebook *and* echoes to the server's terminal. Its lines go to the parent
    # instead, which prints them once (see parallel_map).
    sys.stdout = _Lines(lambda text: lines.put(("stdout", text)), sys.__stdout__)
    sys.stderr = _Lines(lambda text: lines.put(("stderr", text)), sys.__stderr__)
    if threads:
        torch.set_num_threads(threads)
    if gpus > 1 and counter is not None:  # several GPUs: each worker its own, before CUDA starts in it
        with counter.get_lock():
            index, counter.value = counter.value, counter.value + 1
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # the parent's own choice of GPUs, if it made one
        ids = visible.split(",") if visible else [str(i) for i in range(gpus)]
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[index % len(ids)]
    quiet_cuda_probe()


def quiet_cuda_probe() -> None:
    """A CPU-only process on a machine with a CUDA toolkit: torch.compile's import of cpp_extension would warn "No
    CUDA runtime is found" once per worker, noise a user should not have to learn to ignore."""
    if not torch.cuda.is_available():
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def _relay(lines) -> None:
    """Print the workers' lines that have arrived."""
    while not lines.empty():
        name, text = lines.get()
        (sys.stdout if name == "stdout" else sys.stderr).write(text)


@contextlib.contextmanager
def _printing_through_bars():
    """What is printed meanwhile goes through ``tqdm.write`` (tqdm's own file wrapper), so that no line lands in
    the middle of a text bar."""
    from tqdm.contrib import DummyTqdmFile

    with contextlib.redirect_stdout(DummyTqdmFile(sys.stdout)), contextlib.redirect_stderr(DummyTqdmFile(sys.stderr)):
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int = 1, threads: int | None = None,
                 on_done: Callable[[int, Any], None] | None = None, desc: str | None = None) -> list:
    """``[fn(item) for item in items]`` in ``workers`` spawned processes of ``threads`` torch threads each.

    ``workers <= 1`` runs in this process. The first exception stops the pool (running items finish) and is
    raised with the item that caused it. ``on_done(index, value)`` is called as results arrive. ``desc``: show a
    progress bar over the items (:mod:`bnext_lib.progress`: a widget in Jupyter, text elsewhere). What the
    workers print is printed here, once.
    """
    results: list = [None] * len(items)
    bar = tqdm_class()(total=len(items), desc=desc, unit="item", disable=desc is None or len(items) <= 1)
    with bar, (_printing_through_bars() if not bar.disable else contextlib.nullcontext()):
        if workers <= 1 or len(items) <= 1:
            _serial_map(fn, items, threads, results, bar, on_done)
        else:
            _pool_map(fn, items, workers, threads, results, bar, on_done)
    return results


def _serial_map(fn, items, threads, results, bar, on_done) -> None:
    saved = torch.get_num_threads()
    quiet_cuda_probe()
    try:
        if threads:
            torch.set_num_threads(threads)
        for i, item in enumerate(items):
            results[i] = fn(item)
            if on_done:
                on_done(i, results[i])
            bar.update()
    finally:
        torch.set_num_threads(saved)


def _pool_map(fn, items, workers, threads, results, bar, on_done) -> None:
    ctx = mp.get_context("spawn")  # fork after torch has threads is unsafe
    lines = ctx.SimpleQueue()
    failed = None
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with ProcessPoolExecutor(min(workers, len(items)), mp_context=ctx, initializer=_init_worker,
                             initargs=(threads, lines, gpus, ctx.Value("i", 0))) as pool:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        pending = set(futures)
        while pending:  # relaying while items run; a failure cancels what has not started
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _relay(lines)  # a worker's lines are queued before its result is sent: they print first
            for f in done:
                i = futures[f]
                if f.cancelled():
                    continue
                if f.exception() is not None:
                    if failed is None:
                        failed = (i, f.exception())
                        for p in pending:
                            p.cancel()
                    continue
                results[i] = f.result()
                if on_done and failed is None:
                    on_done(i, results[i])
                bar.update()
    _relay(lines)  # what the workers flushed on exit
    if failed is not None:
        i, e = failed
        raise RuntimeError(f"work item {i} ({items[i]!r:.300}) failed: {e}") from e
