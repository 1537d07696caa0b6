"""Publish arrays from one process and read them zero-copy in another."""

import multiprocessing as mp

import numpy as np

import ramxchg


def consumer(channel_name: str, count: int) -> None:
    ch = ramxchg.Channel(channel_name)
    with ch.subscribe() as sub:
        for _ in range(count):
            item = sub.get(timeout=10)
            print(f"got {item.name}: shape {item.shape}, sum {item.array.sum()}, {item.attrs}")


if __name__ == "__main__":
    ch = ramxchg.Channel("quickstart")
    reader = mp.get_context("spawn").Process(target=consumer, args=("quickstart", 3))
    reader.start()
    for frame in range(3):
        ch.put(np.full((1024, 1024), frame, dtype=np.uint16), attrs={"frame": frame})
    reader.join()
    for name in ch.names():
        ch.delete(name)
