"""Linux inotify through ctypes: which files in watched folders anything opened or changed.

The path traversal test uses it as an independent witness: the file tools are not asked
what they touched; the kernel reports every open, read, write, create and delete in the
folders outside the workspace.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

_IN_ALL_EVENTS = 0x00000FFF
_IN_ISDIR = 0x40000000
_IN_IGNORED = 0x00008000
_HEADER = struct.Struct("iIII")


class Watch:
    """Events in a set of folders (not their subfolders: watch each one)."""

    def __init__(self, folders: list[Path]) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._folders: dict[int, Path] = {}
        for folder in folders:
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(folder), _IN_ALL_EVENTS)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder} failed")
            self._folders[wd] = folder

    def events(self) -> list[tuple[Path, int]]:
        """Everything that happened since the last call: (path, event mask)."""
        found: list[tuple[Path, int]] = []
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return found
            offset = 0
            while offset < len(data):
                wd, mask, _, length = _HEADER.unpack_from(data, offset)
                name = data[offset + _HEADER.size : offset + _HEADER.size + length].rstrip(b"\0")
                offset += _HEADER.size + length
                if not mask & _IN_IGNORED:
                    found.append((self._folders[wd] / os.fsdecode(name), mask & ~_IN_ISDIR))

    def close(self) -> None:
        os.close(self._fd)
