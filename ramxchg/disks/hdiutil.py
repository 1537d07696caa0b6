"""macOS: a RAM disk from ``hdiutil attach ram://``, formatted by ``diskutil erasevolume``.

The memory is only given back on ``hdiutil detach``, so teardown detaches. A
``.metadata_never_index`` file keeps Spotlight from indexing every array written.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from .._errors import RamDiskError
from .base import DiskSpec, MountedDisk, RamDiskAdapter, RamDiskInfo
from .persist import LAUNCHD_LABEL, launchd_plist, macos_script

SECTOR = 512
VOLUMES = "/Volumes"
FILESYSTEMS = ("HFS+", "APFS")


@dataclass(frozen=True)
class DiskImage:
    """One attached image from ``hdiutil info``: its path and (device, mount point) rows."""

    image_path: str
    devices: tuple[tuple[str, str], ...]

    @property
    def ram_backed(self) -> bool:
        """Whether the image lives in RAM (``ram://``)."""
        return self.image_path.startswith("ram://")


@dataclass(frozen=True)
class MacMount:
    """One line of ``mount`` output: ``/dev/disk4 on /Volumes/X (hfs, local, ...)``."""

    device: str
    mount_point: str
    fs_type: str
    options: tuple[str, ...]


def parse_attach(text: str) -> str:
    """The device (``/dev/disk4``) that ``hdiutil attach -nomount ram://N`` printed."""
    device = text.strip().split()[0] if text.strip() else ""
    if not device.startswith("/dev/"):
        raise RamDiskError(f"unexpected hdiutil attach output: {text!r}")
    return device


def parse_hdiutil_info(text: str) -> list[DiskImage]:
    """Attached images from ``hdiutil info`` (sections split by ``=====`` lines)."""
    images = []
    for section in re.split(r"^=+\s*$", text, flags=re.MULTILINE)[1:]:
        image_path = ""
        devices = []
        for line in section.splitlines():
            if line.startswith("image-path"):
                image_path = line.split(":", 1)[1].strip()
            elif line.startswith("/dev/"):
                cells = [c.strip() for c in line.split("\t")]
                mount_point = cells[-1] if len(cells) > 1 and cells[-1].startswith("/") else ""
                devices.append((cells[0], mount_point))
        images.append(DiskImage(image_path, tuple(devices)))
    return images


def parse_mount_output(text: str) -> list[MacMount]:
    """Parse the BSD ``mount`` listing."""
    mounts = []
    for line in text.splitlines():
        match = re.match(r"^(\S+) on (.+) \(([^)]*)\)\s*$", line)
        if match:
            fs, *options = [o.strip() for o in match.group(3).split(",")]
            mounts.append(MacMount(match.group(1), match.group(2), fs, tuple(options)))
    return mounts


def _whole_disk(device: str) -> str:
    return re.sub(r"(disk\d+)(s\d+)+$", r"\1", device)


class HdiutilAdapter(RamDiskAdapter):
    """RAM disks through hdiutil and diskutil (macOS)."""

    name = "hdiutil"
    default_path = "/Volumes/ramxchg"

    def _tools(self) -> None:
        for tool in ("hdiutil", "diskutil"):
            if not self.runner.which(tool):
                raise RamDiskError(
                    f"{tool} was not found; it ships with macOS (is /usr/bin on PATH?)",
                    command=[tool],
                )

    def mount(self, spec: DiskSpec) -> MountedDisk:
        """Attach a ``ram://`` image, format it and mount it at ``/Volumes/<name>``."""
        path = spec.path.rstrip("/")
        name = os.path.basename(path)
        if os.path.dirname(path) != VOLUMES or not name:
            raise RamDiskError(
                f"on macOS a RAM disk mounts at {VOLUMES}/<name>, not {spec.path}; "
                f"use e.g. {VOLUMES}/ramxchg",
                path=spec.path,
            )
        fs = spec.filesystem or "HFS+"
        if fs not in FILESYSTEMS:
            raise RamDiskError(f"filesystem {fs!r} is not one of {FILESYSTEMS}", path=path)
        self._tools()
        taken = [mount for mount in self._mounts() if mount.mount_point == path]
        if taken:  # diskutil would mount the new volume as "<name> 1" instead
            raise RamDiskError(
                f"{path} is already mounted ({taken[-1].device}); unmount it first with "
                f"`ramxchg teardown {shlex.quote(path)}`",
                path=path,
            )
        sectors = -(-spec.size_bytes // SECTOR)
        attach = ["hdiutil", "attach", "-nomount", f"ram://{sectors}"]
        device = parse_attach(self._run(attach, "attaching a RAM disk").stdout)
        erase = ["diskutil", "erasevolume", fs, name, device]
        try:
            self._run(erase, f"formatting {device}")
        except RamDiskError:
            # Give the memory back: an unformatted RAM disk would hold it until reboot.
            self.runner.run(["hdiutil", "detach", device])
            raise
        self.host.touch(os.path.join(path, ".metadata_never_index"))
        return MountedDisk(path, device, self.name, (tuple(attach), tuple(erase)))

    def ram_images(self) -> list[DiskImage]:
        """The attached ``ram://`` images."""
        self._tools()
        info = self._run(["hdiutil", "info"], "listing disk images")
        return [image for image in parse_hdiutil_info(info.stdout) if image.ram_backed]

    def _mounts(self) -> list[MacMount]:
        return parse_mount_output(self._run(["mount"], "listing mounts").stdout)

    def _find(self, path: str) -> tuple[MacMount, bool]:
        mounts = [m for m in self._mounts() if _inside(path, m.mount_point)]
        if not mounts:
            raise RamDiskError(f"no mount holds {path}", path=path)
        mount = max(mounts, key=lambda m: len(m.mount_point))
        disk = _whole_disk(mount.device)
        ram = any(
            device == disk or point == mount.mount_point
            for image in self.ram_images()
            for device, point in image.devices
        )
        return mount, ram

    def unmount(self, path: str, *, force: bool = False, missing_ok: bool = False) -> bool:
        """``hdiutil detach`` the RAM disk mounted at ``path`` (memory is freed only then)."""
        point = path.rstrip("/")
        mount, ram = self._find(point)
        if mount.mount_point != point and missing_ok:
            return False
        if not ram or mount.mount_point != point:
            raise RamDiskError(
                f"{path} is not the mount point of a RAM disk; refusing to detach it",
                path=path,
            )
        command = ["hdiutil", "detach", _whole_disk(mount.device)]
        self._run([*command, "-force"] if force else command, f"detaching {path}")
        return True

    def describe(self, path: str) -> RamDiskInfo:
        """Filesystem, size and RAM backing (an attached ``ram://`` image) of ``path``."""
        real = os.path.realpath(path)
        mount, ram = self._find(real)
        total, free = self.host.disk_usage(real)
        return RamDiskInfo(
            path=real,
            mount_point=mount.mount_point,
            fs_type=mount.fs_type,
            total_bytes=total,
            free_bytes=free,
            ram_backed=ram,
            mount_options=mount.options,
            device=mount.device,
            adapter=self.name,
        )

    def persist(self, spec: DiskSpec, target_dir: str | None = None) -> list[str]:
        """Write the script and a launchd agent that runs it at login, then load it."""
        script, plist = _persist_files(target_dir)
        name = os.path.basename(spec.path.rstrip("/"))
        fs = spec.filesystem or "HFS+"
        self.host.write_text(script, macos_script())
        self.host.write_text(plist, launchd_plist(script, name, spec.size_bytes, fs))
        done = [f"wrote {script}", f"wrote {plist}"]
        if target_dir is None:
            command = ["launchctl", "load", "-w", plist]
            self._run(command, "loading the launchd agent")
            done.append("ran " + " ".join(command))
        return done

    def unpersist(self, path: str) -> list[str]:
        """Unload and remove the launchd agent and its script (one per user)."""
        script, plist = _persist_files(None)
        done = []
        if self.host.exists(plist):
            command = ["launchctl", "unload", "-w", plist]
            self._run(command, "unloading the launchd agent")
            done.append("ran " + " ".join(command))
        for installed in (plist, script):
            if self.host.remove(installed):
                done.append(f"removed {installed}")
        return done


def _persist_files(target_dir: str | None) -> tuple[str, str]:
    """The login script and the launchd agent: in ``target_dir``, or where they belong."""
    home = os.path.expanduser("~")
    script_dir = target_dir or os.path.join(home, "Library/Application Support/ramxchg")
    agent_dir = target_dir or os.path.join(home, "Library/LaunchAgents")
    return (
        os.path.join(script_dir, "ramxchg-ramdisk.sh"),
        os.path.join(agent_dir, f"{LAUNCHD_LABEL}.plist"),
    )


def _inside(path: str, mount_point: str) -> bool:
    return mount_point in ("/", path) or path.startswith(mount_point + "/")
