"""``ramxchg bench``: ramxchg side by side with the transports users would pick instead.

A producer process sends messages (contiguous uint8 arrays) to a consumer process,
which copies every byte into a reused buffer and, after each phase, checks the bytes it
got. Per size, ``repeat`` rounds; in each, every transport in turn runs in a new pair
of processes: a warm-up, then a *streamed* phase (a window of messages in flight; GB/s
from the first send to the last message read) and a *lock-step* phase (one message at
a time; latency from just before the send to the last byte read). Results are the
median with min and max over the rounds: side by side in time, so a machine that slows
down for a while slows every transport's round of that moment.

ramxchg's rows (channels with default settings, the same without recycling, HDF5 items,
a huge-page tmpfs when root) are compared with Python's own transports and with the
peers: np.save/np.load on the real disk, Ray's object store, iceoryx2 and an Arrow IPC
file on /dev/shm. A peer that is not installed (``pip install 'ramxchg[bench]'``) is
skipped with the reason; one that fails is reported per size and the run goes on.

The ``--json`` document (`run_bench`'s result)::

    {
      "version": 2,
      "machine": {"cpus", "memory_bytes", "kernel", "system", "python", "numpy"},
      "config": {"sizes": [bytes, ...], "repeat": int, "quick": bool},
      "memcpy_gbps": float,          # single-thread memcpy, the physical reference
      "disk_folder": "/var/tmp",     # where np.save/np.load ran
      "seconds": float,              # wall time of the run
      "transports": [
        {
          "name": "ramxchg_put", "label": "ramxchg put",
          "skipped": null | "reason",
          "results": [               # one per size; empty when skipped
            {
              "size": bytes, "streamed": n, "lockstep": n, "window": n,
              "gbps":   {"median", "min", "max"},
              "p50_us": {"median", "min", "max"},
              "p99_us": {"median", "min", "max"},
              "max_us": float,       # slowest single lock-step message
              "ratio_memcpy": float, # gbps median / memcpy_gbps
              "ratio_queue": float | null,      # gbps / mp.Queue's gbps at that size
              "latency_vs_queue": float | null, # p50 / mp.Queue's p50 (< 1: faster)
              "vs_peers": {          # ramxchg's rows only: gbps / the peer's gbps
                "iceoryx2": float | null, "ray": float | null, "npy_disk": float | null
              },
              "error": null
            }
            # or {"size": bytes, "error": "what went wrong"}
          ]
        }
      ]
    }
"""

from __future__ import annotations

from .runner import FULL_SIZES, QUICK_SIZES, BenchConfig
from .suite import run_bench

__all__ = ["FULL_SIZES", "QUICK_SIZES", "BenchConfig", "run_bench"]
