"""Stop a listening socket without resetting the connections it has queued (Linux).

The kernel completes TCP handshakes on its own and queues the connections until the
server accepts them: the client's ``connect()`` has already succeeded. Closing the
listening socket resets every connection still in that queue, and with several
workers the supervisor's copy of the socket keeps it listening (and queueing) after
every worker has stopped accepting, until the supervisor exits and resets them all.

Stopping in order avoids both: first no new connection is let in (a socket filter
that drops every SYN, so a client's connection request goes unanswered; it retries,
and by then the socket is closed and the connection refused), then the workers
accept what is queued, then the socket is closed. The filter lets every other packet
through: a handshake already under way (the client has its SYN-ACK, so its
``connect()`` has returned) completes and joins the queue instead of being left
half-open and reset at the close. Python's ``socket`` module offers no way to attach
a filter, hence the few ``ctypes`` lines. On other systems these functions do
nothing and closing behaves as before.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys
import time
from typing import Final, Protocol

__all__ = ["queued_connections", "stop_listening", "wait_until_accepted"]

_LINUX: Final = sys.platform == "linux"
_SO_ATTACH_FILTER: Final = 26  # <asm-generic/socket.h>
# Classic BPF, run with the packet's data at its TCP header (struct sock_filter:
# code, jt, jf, k). Keep 0 bytes (drop) of a packet whose flags are SYN without ACK.
_DROP_CONNECTION_REQUESTS: Final = b"".join(
    struct.pack("HBBI", *instruction)
    for instruction in (
        (0x30, 0, 0, 13),  # BPF_LD|BPF_B|BPF_ABS: the TCP flags byte
        (0x54, 0, 0, 0x12),  # BPF_ALU|BPF_AND|BPF_K: SYN and ACK only
        (0x15, 0, 1, 0x02),  # BPF_JMP|BPF_JEQ|BPF_K: SYN alone? next, else skip one
        (0x06, 0, 0, 0),  # BPF_RET|BPF_K: keep 0 bytes, the packet is dropped
        (0x06, 0, 0, 0xFFFFFFFF),  # BPF_RET|BPF_K: keep the whole packet
    )
)
_FILTER_LENGTH: Final = len(_DROP_CONNECTION_REQUESTS) // struct.calcsize("HBBI")
# struct tcp_info: 8 one-byte fields, then u32 rto, ato, snd_mss, rcv_mss, unacked. For a
# listening socket, tcpi_unacked is the length of its accept queue.
_TCP_INFO_UNACKED: Final = struct.Struct("=8x4x4x4x4xI")
_POLL_SECONDS: Final = 0.005


class ListeningSocket(Protocol):
    """What is needed of a socket: `socket.socket` and asyncio's server sockets qualify."""

    def setsockopt(self, level: int, option: int, value: bytes, /) -> None:
        """Set a socket option."""

    def getsockopt(self, level: int, option: int, buflen: int, /) -> bytes:
        """Read a socket option."""


def stop_listening(sock: ListeningSocket) -> bool:
    """Let no new connection into ``sock``'s queue; those already queued stay there.

    Connections whose handshake is under way still complete and join the queue.

    Applies to the socket itself, in every process that holds it. Returns False
    where this is not supported (not Linux).
    """
    if not _LINUX:
        return False
    program = ctypes.create_string_buffer(_DROP_CONNECTION_REQUESTS, len(_DROP_CONNECTION_REQUESTS))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}, native layout.
    fprog = struct.pack("@HP", _FILTER_LENGTH, ctypes.addressof(program))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)  # the kernel copies it
    return True


def queued_connections(sock: ListeningSocket) -> int:
    """Connections the kernel has accepted for ``sock`` that no process has taken yet."""
    if not _LINUX:
        return 0
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_UNACKED.size)
    (queued,) = _TCP_INFO_UNACKED.unpack(info)
    return int(queued)


def wait_until_accepted(sock: ListeningSocket, timeout: float) -> int:
    """Wait until ``sock``'s queue is empty or ``timeout`` passes; return what is left."""
    deadline = time.monotonic() + timeout
    while (queued := queued_connections(sock)) and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
    return queued
