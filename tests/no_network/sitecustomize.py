"""Imported at start-up by every Python process that has this folder on PYTHONPATH (the `site` module imports
`sitecustomize`), and so by the processes those start: a connection, a datagram or a name lookup towards anything
but this machine is refused and written to the file $FIQA_NETWORK_LOG (one JSON line per attempt, with the process
id and a stack), so that a test can show that a command opens no outbound connection. Forked children inherit it."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import traceback

_LOG = os.environ.get("FIQA_NETWORK_LOG")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _record(kind: str, target) -> None:
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps({"pid": os.getpid(), "kind": kind, "target": repr(target),
                                "stack": traceback.format_stack(limit=12)}) + "\n")


def _local_host(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is None or str(host).lower() in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False  # a name: resolving it is already a lookup
    return address.is_loopback or address.is_unspecified


def _local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return True
    return _local_host(address[0])


def _guard(name: str):
    original = getattr(socket.socket, name)

    def guarded(self, *args):
        address = args[-1] if name == "sendto" else args[0]
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address):
            _record(name, address)
            raise OSError(101, f"network is unreachable (a test refuses outbound connections): {address!r}")
        return original(self, *args)

    setattr(socket.socket, name, guarded)


for _name in ("connect", "connect_ex", "sendto"):
    _guard(_name)

_getaddrinfo = socket.getaddrinfo


def _checked_getaddrinfo(host, *args, **kwargs):
    if not _local_host(host):
        _record("getaddrinfo", host)
        raise socket.gaierror(socket.EAI_NONAME, f"name lookups are refused by a test: {host!r}")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _checked_getaddrinfo
for _lookup in ("gethostbyname", "gethostbyname_ex"):
    _original_lookup = getattr(socket, _lookup)

    def _checked(host, _original=_original_lookup, _kind=_lookup):
        if not _local_host(host):
            _record(_kind, host)
            raise socket.gaierror(socket.EAI_NONAME, f"name lookups are refused by a test: {host!r}")
        return _original(host)

    setattr(socket, _lookup, _checked)
