"""Spark jobs of a notebook cell: a tag on the jobs a cell starts, so that interrupting the cell
cancels them, and a one-line progress for jobs that run longer than about a second.

Shipped to drivers beside ``idioms.py`` (standard library only at import time; pyspark is reached
through the objects handed in). :mod:`.idioms` installs :class:`_CellJobs` on the IPython shell.
"""

from __future__ import annotations

import contextlib
import contextvars
import html
import signal
import sys
import threading
import uuid
from typing import Any


def _is_a(obj: Any, module: str, name: str) -> bool:
    return any(c.__name__ == name and c.__module__.startswith(module) for c in type(obj).__mro__)


#: Attribute that marks our own callbacks and wrappers (never wrapped or registered twice).
_MARKER = "_dbjl_idiom"


class SparkJobTag:
    """A tag on the Spark jobs that the current thread starts from now on, to cancel them.

    Classic Spark 3.5+ tags jobs on the SparkContext (its session tags would not do: they
    belong to the JVM thread, and py4j answers an interrupted thread's next call from a new
    one); Spark Connect tags operations on the session; older Spark can only cancel every job
    of the context."""

    def __init__(self, spark: Any) -> None:
        self.spark = spark
        self.tag = f"dbjl-cell-{uuid.uuid4().hex}"
        try:
            sc = spark.sparkContext  # Spark Connect has none
        except Exception:  # noqa: BLE001
            sc = None
        if sc is not None:
            self._add, self._cancel, self._remove = (
                sc.addJobTag,
                sc.cancelJobsWithTag,
                sc.removeJobTag,
            )
        else:
            self._add, self._cancel, self._remove = (
                spark.addTag,
                spark.interruptTag,
                spark.removeTag,
            )
        try:
            self._add(self.tag)
            self.tagged = True
        except Exception:  # noqa: BLE001 - no job tags in this Spark
            self.tagged = False

    def cancel(self) -> None:
        if self.tagged:
            self._cancel(self.tag)
        else:
            self.spark.sparkContext.cancelAllJobs()

    def close(self) -> None:
        if self.tagged:
            with contextlib.suppress(Exception):  # e.g. the cell stopped the session
                self._remove(self.tag)


class SparkProgress:
    """A progress line for the Spark jobs that run while a cell runs, updated in place.

    A daemon thread polls the SparkContext's status tracker every ``interval`` seconds and shows
    nothing until a job has run for ``after`` seconds, so quick cells stay clean. It runs in a
    copy of the cell's context, so that ipykernel files its output under that cell."""

    def __init__(self, sc: Any, interval: float = 0.5, after: float = 1.0) -> None:
        self.tracker = sc.statusTracker()
        self.interval, self.after = interval, after
        self.stopped = threading.Event()
        self.handle: Any = None
        self.jobs: set[int] = set()
        self.thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._poll,), daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self, interrupted: bool) -> None:
        self.stopped.set()
        self.thread.join(self.interval * 4)
        if self.handle is not None:
            jobs = len(self.jobs)
            word = "job" if jobs == 1 else "jobs"
            self._show(f"Spark: {jobs} {word} {'cancelled' if interrupted else 'finished'}", None)

    def _poll(self) -> None:
        waited = 0.0
        while not self.stopped.wait(self.interval):
            try:
                active = list(self.tracker.getActiveJobsIds())
                self.jobs.update(active)
                waited = waited + self.interval if active else 0.0
                if not active or waited < self.after:
                    continue
                done = total = 0
                stages = []
                for stage_id in self.tracker.getActiveStageIds():
                    info = self.tracker.getStageInfo(stage_id)
                    if info is not None:
                        done += info.numCompletedTasks
                        total += info.numTasks
                        stages.append(str(stage_id))
                word = "job" if len(active) == 1 else "jobs"
                text = (
                    f"Spark: {len(active)} {word} running, stage {', '.join(stages) or '-'}: "
                    f"{done}/{total} tasks"
                )
                self._show(text, (done, total))
            except Exception:  # noqa: BLE001 - the session went away: no more progress
                return

    def _show(self, text: str, fraction: tuple[int, int] | None) -> None:
        bar = ""
        if fraction is not None:
            done, total = fraction
            bar = f'<progress value="{done}" max="{max(total, 1)}"></progress> '
        bundle = {"text/html": f"<div>{bar}{html.escape(text)}</div>", "text/plain": text}
        from IPython.display import display as ipython_display

        if self.handle is None:
            self.handle = ipython_display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)


class _CellJobs:
    """Cancels the Spark jobs of a cell that was interrupted (IPython's cell events).

    An interrupt only stops Python waiting for the JVM; without this the jobs would go on
    (ipykernel replaces pyspark's own SIGINT handler while a cell runs)."""

    _dbjl_idiom = True  # marks the callbacks of an earlier register() for removal

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.tag: SparkJobTag | None = None
        self.progress: SparkProgress | None = None
        self.previous_sigint: tuple[Any] | None = None  # (handler,): getsignal may give None
        self.interrupted = False
        # A progress line only in a kernel: a terminal has Spark's own console progress bar.
        self.show_progress = hasattr(shell, "kernel")

    def pre_run_cell(self, info: Any) -> None:
        self.tag = self.progress = self.previous_sigint = None
        self.interrupted = False
        spark = self.shell.user_ns.get("spark")
        if _is_a(spark, "pyspark.sql", "SparkSession"):
            with contextlib.suppress(Exception):  # a stopped session: nothing to cancel
                self.tag = SparkJobTag(spark)
            # py4j may turn the KeyboardInterrupt into a network error (the interrupt cut its
            # answer short): the handler remembers that there was one.
            with contextlib.suppress(ValueError):  # not the main thread: no handler of ours
                self.previous_sigint = (signal.signal(signal.SIGINT, self._on_sigint),)
            if self.show_progress:
                with contextlib.suppress(Exception):  # Spark Connect: no status tracker
                    self.progress = SparkProgress(spark.sparkContext)
                    self.progress.start()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.interrupted = True
        raise KeyboardInterrupt

    def post_run_cell(self, result: Any) -> None:
        tag, self.tag = self.tag, None
        progress, self.progress = self.progress, None
        if self.previous_sigint is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGINT, self.previous_sigint[0])
            self.previous_sigint = None
        error = getattr(result, "error_in_exec", None)
        interrupted = self.interrupted or isinstance(error, KeyboardInterrupt)
        if tag is not None:
            try:
                if interrupted:
                    tag.cancel()
            except Exception as exc:  # noqa: BLE001 - say it, the cell's own error stays shown
                print(f"Could not cancel the cell's Spark jobs: {exc}", file=sys.stderr)
            finally:
                tag.close()
        if progress is not None:
            with contextlib.suppress(Exception):
                progress.stop(interrupted)

    def install(self) -> None:
        for event in ("pre_run_cell", "post_run_cell"):
            for callback in list(self.shell.events.callbacks[event]):
                if getattr(getattr(callback, "__self__", None), _MARKER, False):
                    self.shell.events.unregister(event, callback)
            self.shell.events.register(event, getattr(self, event))
