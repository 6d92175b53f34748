"""Linux /proc helpers for tests and benchmarks/soak_faults.py: a process's descendants, which of them
work, whether they ended, and the TCP sockets they listen on (by pid, never by name)."""

from __future__ import annotations

import ipaddress
import os
import signal
import time
from pathlib import Path

TCP_LISTEN = "0A"  # st column of /proc/net/tcp: TCP_LISTEN (include/net/tcp_states.h)


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def children(pid: int) -> dict[int, int]:
    """pid -> parent pid of every live (not zombie) process."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields and fields[0] != "Z":
            out[int(stat.parent.name)] = int(fields[1])
    return out


def descendants(root: int) -> set[int]:
    """Live processes whose chain of parents leads to ``root`` (``root`` excluded)."""
    parent_of = children(root)
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parent_of.items() if pp in frontier and p not in found}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def started(pid: int) -> int | None:
    """When a live process started (clock ticks after boot; None if gone): with its pid, it names the
    process even after the pid is reused."""
    fields = _stat(pid)
    return int(fields[19]) if fields and fields[0] != "Z" else None


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time the process has used, in clock ticks (0 if it is gone)."""
    fields = _stat(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def working(root: int, ticks: int, first_seen: dict[int, int]) -> set[int]:
    """Descendants of ``root`` with no child of their own that used ``ticks`` of CPU since this was first
    called on them (``first_seen``: pid -> CPU ticks then, kept by the caller): the processes doing the
    work, such as a pool's workers, not the forkserver that forked them nor an idle resource tracker."""
    parent_of = children(root)
    found = descendants(root)
    leaves = found - {pp for p, pp in parent_of.items() if p in found}
    for pid in leaves - set(first_seen):
        first_seen[pid] = cpu_ticks(pid)
    return {p for p in leaves if cpu_ticks(p) - first_seen[p] >= ticks}


def still_running(procs: dict[int, int | None]) -> dict[int, int | None]:
    """Those of ``procs`` (pid -> ``started``) that are the same live process still."""
    return {p: t for p, t in procs.items() if t is not None and started(p) == t}


def wait_gone(procs: dict[int, int | None], timeout_s: float) -> dict[int, int | None]:
    """Poll until none of ``procs`` (pid -> ``started``) runs; those still running at ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while still_running(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return still_running(procs)


def kill_left(procs: dict[int, int | None]) -> None:
    """SIGKILL those of ``procs`` still running (clean-up after a failed check; by pid, never by name)."""
    for pid in still_running(procs):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _decode(hex_addr: str) -> tuple[str, int]:
    """``0100007F:1F90`` -> ("127.0.0.1", 8080); IPv6 as four little-endian 32-bit words."""
    addr, port = hex_addr.split(":")
    raw = bytes.fromhex(addr)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw)), int(port, 16)


def listening_sockets() -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket in this network namespace."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == TCP_LISTEN:
                out[int(cols[9])] = _decode(cols[1])
    return out


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets ``pid`` holds open (empty if it is gone or not ours to read)."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listening_of(pids: set[int]) -> dict[int, list[tuple[str, int]]]:
    """pid -> the (address, port) pairs it listens on, for the given processes."""
    table = listening_sockets()
    found = {}
    for pid in pids:
        addrs = [table[i] for i in socket_inodes(pid) if i in table]
        if addrs:
            found[pid] = sorted(addrs)
    return found


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped IPv6 loopback (::ffff:127.0.0.1, how a dual-stack socket shows it)."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def comm(pid: int) -> str:
    """The process's short name, for messages only (never to select processes)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
