"""Linux /proc helpers for tests: a process's descendants and the TCP sockets they listen on (by pid, never by name)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

TCP_LISTEN = "0A"  # st column of /proc/net/tcp: TCP_LISTEN (include/net/tcp_states.h)


def children(pid: int) -> dict[int, int]:
    """pid -> parent pid of every live (not zombie) process."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
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
