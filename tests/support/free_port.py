"""A local TCP port that nothing listens on (for gloo process groups and unreachable-URL tests)."""

import socket


def free_port() -> int:
    """Bind port 0 on 127.0.0.1, read the port the OS chose, close the socket again and return the port."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]
