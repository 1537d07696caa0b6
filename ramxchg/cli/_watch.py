"""``ramxchg watch``: follow a channel, print each item or run a command on it.

With ``--exec "CMD {path}"`` each item runs CMD (split like a shell would, never run by
one: write ``sh -c '...'`` for pipes). The item is acked when CMD exits 0; a failing CMD
is retried ``--retries`` times, then the item is moved to ``.ramxchg/dead/`` with a
reason file (docs/protocol.md, "Dead letters").

Ctrl-C (or SIGTERM) once: take no new items, let running commands finish (acked if
they succeed, released for redelivery if not). Twice: abandon them (SIGTERM to their
process group, SIGKILL after `KILL_AFTER_SECONDS`); abandoned items are released,
never acked. Commands run in their own session so the terminal's Ctrl-C reaches only
us and we decide.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import Channel, CorruptItem, Item, ItemNotFound, RamxchgError, Subscription
from . import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, add_command, add_json, stop_signals
from ._failures import explained
from ._items import add_channel_args, arrays_record, open_channel
from ._output import ITEM_COLUMNS, Column, RowStream, item_row, on_terminal
from ._output import item_record as listed

log = logging.getLogger(__name__)

#: After a second Ctrl-C, abandoned commands get SIGTERM, then SIGKILL after this.
KILL_AFTER_SECONDS = 5.0
#: How often the main loop looks at signals and finished commands.
_TICK = 0.1

WATCH_EXAMPLE = """\
output (without --exec): one row per item: NAME SEQ FORMAT SIZE PUBLISHED SHAPE DTYPE
  PATH (piped: tab-separated, SIZE in bytes, PUBLISHED in ISO 8601 UTC, '-' for none)
placeholders in CMD: {path} {name} {seq}
environment of CMD: RAMXCHG_CHANNEL RAMXCHG_GROUP RAMXCHG_NAME RAMXCHG_SEQ RAMXCHG_PATH
  RAMXCHG_FORMAT RAMXCHG_SHAPE RAMXCHG_DTYPE (JSON/npy descr) RAMXCHG_ARRAYS RAMXCHG_ATTRS
  (JSON) RAMXCHG_ATTEMPT; ARRAYS or ATTRS over 32 KiB are not in the environment but in
  a file named by RAMXCHG_ARRAYS_FILE or RAMXCHG_ATTRS_FILE (removed when CMD is done)

examples:
  ramxchg watch camera                                   # one line per item
  ramxchg watch camera --json | jq .shape
  ramxchg watch camera --group analysis --exec "python analyse.py {path}"
  ramxchg watch camera --group archive --jobs 4 --exec "cp {path} /data/{name}.npy"
  ramxchg watch camera --group plots --exec "sh -c 'plot.sh \\"$RAMXCHG_PATH\\" | lpr'"

Ctrl-C once lets running commands finish; twice abandons them (never acked).
"""


def register(subparsers: Any) -> None:
    """Add ``watch`` to the ``ramxchg`` command."""
    watch = add_command(
        subparsers,
        "watch",
        run_watch,
        help="follow a channel: print each item or run a command on it",
        description="Deliver the channel's items as they are published (catching up on "
        "what is there). With --group, items are acked when printed or when CMD succeeds.",
        epilog=WATCH_EXAMPLE,
    )
    add_channel_args(watch)
    watch.add_argument("--create", action="store_true", help="wait for a channel not made yet")
    watch.add_argument("--group", help="durable consumer group (shares items, acks them)")
    watch.add_argument("--exec", dest="command", metavar="CMD", help="run CMD for each item")
    watch.add_argument("--jobs", type=_positive, default=1, help="commands at a time (1)")
    watch.add_argument(
        "--retries", type=_not_negative, default=2, help="retries of a failing CMD (2)"
    )
    watch.add_argument(
        "--retry-delay", type=_seconds, default=1.0, help="seconds before retry n: n x this (1.0)"
    )
    add_json(watch, "print each item as a JSON line")
    watch.add_argument("--count", type=_positive, help="exit after this many items")
    watch.add_argument(
        "--start", choices=("earliest", "latest"), default="earliest", help="(earliest)"
    )
    watch.add_argument(
        "--settle", type=_seconds, help="seconds a legacy file must stay unchanged (0.5)"
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def run_watch(args: argparse.Namespace) -> int:
    """Run ``ramxchg watch``."""
    if not args.create:
        open_channel(args)  # a missing channel is a typo: refused, never created
    channel = open_channel(args, create=True)  # a folder named by path gets its state folder
    try:
        subscription = channel.subscribe(args.group, start=args.start, settle=args.settle)
    except PermissionError as exc:
        if args.group is None or isinstance(exc, RamxchgError):
            raise
        raise explained(
            exc,
            "a durable group records its claims and acks in the channel, which only its "
            "owner may change: watch without --group",
        ) from exc
    watcher = Watcher(channel, subscription, args)
    if on_terminal(sys.stderr):
        print(f"waiting on {channel.path} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    with _signals_counted(watcher):
        try:
            return watcher.run()
        finally:
            subscription.close()


# -- one item -------------------------------------------------------------------------------


def item_record(item: Item) -> dict[str, Any]:
    """What `listed` says (name, seq, format, path, bytes, published), then shape, dtype
    (of a single array), arrays, attrs."""
    arrays = arrays_record(item)
    single = next(iter(arrays.values())) if len(arrays) == 1 else None
    try:
        attrs = item.attrs
    finally:
        item.close()
    return {
        **listed(item),
        "shape": single["shape"] if single else None,
        "dtype": single["dtype"] if single else None,
        "arrays": arrays,
        "attrs": attrs,
    }


def command_for(template: list[str], record: dict[str, Any]) -> list[str]:
    """The argv: placeholders replaced inside each already-split word."""
    seq = "" if record["seq"] is None else str(record["seq"])
    values = {"{path}": record["path"], "{name}": record["name"], "{seq}": seq}
    argv = []
    for word in template:
        filled = word
        for placeholder, value in values.items():
            filled = filled.replace(placeholder, value)
        argv.append(filled)
    return argv


#: Metadata longer than this (bytes) goes to a file named by ``<VAR>_FILE`` instead:
#: Linux refuses any one environment string over 128 KiB (MAX_ARG_STRLEN) with E2BIG.
ENV_VALUE_MAX = 32 << 10


@contextlib.contextmanager
def environment_for(
    record: dict[str, Any], channel: Channel, group: str | None
) -> Iterator[dict[str, str]]:
    """The command's environment: ours plus the item's metadata.

    RAMXCHG_ARRAYS and RAMXCHG_ATTRS longer than `ENV_VALUE_MAX` are written to a
    private temporary file instead, named by RAMXCHG_ARRAYS_FILE / RAMXCHG_ATTRS_FILE
    (and the variable itself is unset); the file is removed on leaving the context.
    """
    env = dict(os.environ)
    env.update(
        RAMXCHG_CHANNEL=str(channel.path),
        RAMXCHG_GROUP=group or "",
        RAMXCHG_NAME=record["name"],
        RAMXCHG_SEQ="" if record["seq"] is None else str(record["seq"]),
        RAMXCHG_PATH=record["path"],
        RAMXCHG_FORMAT=record["format"],
        RAMXCHG_SHAPE="" if record["shape"] is None else json.dumps(record["shape"]),
        RAMXCHG_DTYPE=record["dtype"] or "",
    )
    files: list[str] = []
    try:
        for key, value in (("ARRAYS", record["arrays"]), ("ATTRS", record["attrs"])):
            text = json.dumps(value)
            # Ours only: not inherited from a watch that runs this one.
            env.pop(f"RAMXCHG_{key}", None)
            env.pop(f"RAMXCHG_{key}_FILE", None)
            if len(text.encode()) <= ENV_VALUE_MAX:
                env[f"RAMXCHG_{key}"] = text
                continue
            fd, path = tempfile.mkstemp(prefix=f"ramxchg-{key.lower()}-", suffix=".json")
            files.append(path)
            with os.fdopen(fd, "w") as out:
                out.write(text)
            env[f"RAMXCHG_{key}_FILE"] = path
        yield env
    finally:
        for path in files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass  # the command removed it
            except OSError as exc:  # logged, not raised: the item's outcome is known
                log.warning("cannot remove %s: %s", path, exc)


# -- the loop -------------------------------------------------------------------------------

#: What watch prints after the `ITEM_COLUMNS`.
EXTRA_COLUMNS = (Column("SHAPE"), Column("DTYPE"), Column("PATH"))


@dataclass
class _Job:
    item: Item
    record: dict[str, Any]
    thread: threading.Thread | None = None
    proc: subprocess.Popen[bytes] | None = None
    abort: threading.Event = field(default_factory=threading.Event)


class Watcher:
    """Delivers items to stdout or to commands, and acks or dead-letters them."""

    def __init__(self, channel: Channel, subscription: Subscription, args: argparse.Namespace):
        self.channel = channel
        self.subscription = subscription
        self.args = args
        self.template = shlex.split(args.command) if args.command else None
        self.signals = 0  # Ctrl-C/SIGTERM received
        self._jobs: dict[str, _Job] = {}
        self._results: queue.Queue[tuple[_Job, str, str, int]] = queue.Queue()
        self._handled = 0
        self._dead = 0
        self.rows = RowStream([*ITEM_COLUMNS, *EXTRA_COLUMNS], [12, 6, 6, 9, 19, 11, 6, 0])

    def run(self) -> int:
        """Deliver until ``--count`` items are done or a signal stops us; the exit code."""
        while True:
            if self.signals >= 2 and self._jobs:
                self._abandon()
            stopping = self.signals > 0 or (
                self.args.count is not None and self._handled + len(self._jobs) >= self.args.count
            )
            if stopping or len(self._jobs) >= self.args.jobs:
                if not self._jobs:
                    break
                self._collect(_TICK)
                # Not calling `get` (which sweeps) while commands run: sweep here, so a dead
                # producer's or member's leftovers still go within seconds.
                self.subscription.sweep()
                continue
            self._collect(0)
            try:
                item = self.subscription.get(timeout=_TICK)
            except TimeoutError:
                continue
            self._start(item)
        if self.signals:
            return EXIT_INTERRUPTED
        return EXIT_FAILURE if self._dead else EXIT_OK

    def _start(self, item: Item) -> None:
        try:
            record = item_record(item)
        except (ItemNotFound, FileNotFoundError):
            # Retired (keep_last, ttl) or deleted between delivery and reading: skip it.
            print(
                f"ramxchg: watch: {item.name} was deleted before it was read; skipped",
                file=sys.stderr,
                flush=True,
            )
            return
        except CorruptItem as exc:
            self._finish_failed(item, f"unreadable item: {exc}", 0)
            return
        if self.template is None:
            if self.args.json:
                print(json.dumps(record), flush=True)
            else:
                shape = "x".join(map(str, record["shape"])) if record["shape"] is not None else None
                self.rows.print([*item_row(record), shape, record["dtype"], record["path"]])
            item.ack()
            self._handled += 1
            return
        job = _Job(item, record)
        job.thread = threading.Thread(target=self._run_job, args=(job,), daemon=True)
        self._jobs[item.name] = job
        job.thread.start()

    def _run_job(self, job: _Job) -> None:
        """In a worker thread: run CMD up to 1 + retries times; report on the queue."""
        assert self.template is not None
        try:
            with environment_for(job.record, self.channel, self.args.group) as env:
                self._attempts(job, env)
        except OSError as exc:  # no room for the metadata file: not the item's fault
            reason = f"cannot write its metadata file: {exc}"
            print(f"ramxchg: watch: {job.record['name']}: {reason}", file=sys.stderr, flush=True)
            self._results.put((job, "released", reason, 0))

    def _attempts(self, job: _Job, env: dict[str, str]) -> None:
        """Run CMD up to 1 + retries times with ``env``; report on the queue."""
        assert self.template is not None
        argv = command_for(self.template, job.record)
        attempts = 1 + self.args.retries
        reason, status = "", 0
        for attempt in range(1, attempts + 1):
            if job.abort.is_set():
                break
            env["RAMXCHG_ATTEMPT"] = str(attempt)
            try:
                job.proc = subprocess.Popen(
                    argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True
                )
            except OSError as exc:
                reason, status = f"cannot run {argv[0]!r}: {exc.strerror or exc}", 127
            else:
                status = job.proc.wait()
                job.proc = None
                if status == 0:
                    self._results.put((job, "ok", "", attempt))
                    return
                reason = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
            print(
                f"ramxchg: watch: {job.record['name']}: {argv[0]} failed ({reason}), "
                f"attempt {attempt} of {attempts}",
                file=sys.stderr,
                flush=True,
            )
            if attempt < attempts and (
                self.signals or job.abort.wait(self.args.retry_delay * attempt)
            ):
                break  # stopping: leave the item for a later run instead of retrying
        else:
            self._results.put((job, "failed", reason, status))
            return
        self._results.put((job, "released", reason, status))

    def _collect(self, timeout: float) -> None:
        """Handle finished commands: ack, dead-letter or release."""
        try:
            if timeout > 0:
                job, outcome, reason, number = self._results.get(timeout=timeout)
            else:
                job, outcome, reason, number = self._results.get_nowait()
        except queue.Empty:
            return
        while True:
            self._jobs.pop(job.item.name, None)
            if job.thread is not None:
                job.thread.join()
            if outcome == "ok":
                job.item.ack()
                self._handled += 1
            elif outcome == "failed":
                self._finish_failed(job.item, reason, number)
            else:  # released: Subscription.close gives the claim back to the group
                log.info("released %s without acking it", job.item.name)
            try:
                job, outcome, reason, number = self._results.get_nowait()
            except queue.Empty:
                return

    def _finish_failed(self, item: Item, reason: str, status: int) -> None:
        moved = self.subscription.dead_letter(
            item,
            reason,
            group=self.args.group,
            command=self.args.command,
            exit_status=status,
            attempts=1 + self.args.retries if self.template else 0,
        )
        self._handled += 1
        self._dead += 1
        print(f"ramxchg: watch: {item.name} moved to {moved}: {reason}", file=sys.stderr)

    def _abandon(self) -> None:
        """Second signal: stop every running command; their items are released."""
        for job in list(self._jobs.values()):
            job.abort.set()
            proc = job.proc
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for job in list(self._jobs.values()):
            proc = job.proc
            if proc is not None:
                try:
                    proc.wait(KILL_AFTER_SECONDS)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
        while self._jobs:
            self._collect(_TICK)


@contextlib.contextmanager
def _signals_counted(watcher: Watcher) -> Any:
    """Count SIGINT/SIGTERM instead of raising, so no state is left half-updated."""

    def count(signum: int) -> None:
        watcher.signals += 1
        if watcher.signals == 1 and watcher._jobs:
            print(
                "ramxchg: watch: finishing running commands; Ctrl-C again to abandon them",
                file=sys.stderr,
            )

    with stop_signals(count):
        yield
