#!/bin/sh
# Two ways to give a container a RAM disk big enough for ramxchg.
set -eu
IMAGE="${1:-python:3.11-slim}"

# 1. A bigger /dev/shm (the default root /dev/shm/ramxchg-<uid> then just works).
docker run --rm -it --shm-size=8g "$IMAGE"

# 2. A dedicated tmpfs with huge pages, used as RAMXCHG_ROOT.
docker run --rm -it \
    --mount type=tmpfs,destination=/ramxchg,tmpfs-size=8g,tmpfs-mode=1777 \
    -e RAMXCHG_ROOT=/ramxchg \
    "$IMAGE"
