"""Network I/O of doctor: `GET /_ping` over unix/TCP/TLS, and fetching the daemon's certificate.

Failures are returned as classified `ConnectError` values, never raised, so that
every other check still runs and the report says what went wrong.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

from dockmoat.ci.doctor.config import Target, TlsSettings
from dockmoat.ci.doctor.facts import ConnectError, PingResult, RawResponse

MAX_REPLY = 64 * 1024
_REQUEST = (
    b"GET /_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: dockmoat-doctor\r\n"
    b"Connection: close\r\n\r\n"
)


def _connect(target: Target, timeout: float) -> socket.socket | ConnectError:
    if target.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(target.path or "")
        except OSError as error:
            sock.close()
            return _os_error(error)
        return sock
    if target.scheme == "tcp":
        try:
            return socket.create_connection((target.host or "", target.port or 0), timeout=timeout)
        except socket.gaierror as error:
            return ConnectError("resolve", str(error))
        except OSError as error:
            return _os_error(error)
    return ConnectError("unsupported", f"{target.scheme}:// transports are not probed")


def _os_error(error: OSError) -> ConnectError:
    if isinstance(error, FileNotFoundError):
        return ConnectError("missing", str(error))
    if isinstance(error, ConnectionRefusedError):
        return ConnectError("refused", str(error))
    if isinstance(error, PermissionError):
        return ConnectError("permission", str(error))
    if isinstance(error, TimeoutError):
        return ConnectError("timeout", str(error) or "timed out")
    return ConnectError("os", str(error))


def _ssl_error(error: ssl.SSLError) -> ConnectError:
    if isinstance(error, ssl.SSLCertVerificationError):
        return ConnectError("tls-verify", error.verify_message or str(error))
    reason = (error.reason or "").upper()
    if reason in (
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
        "HTTP_REQUEST",
    ):
        return ConnectError("tls-plain-server", reason.lower().replace("_", " "))
    if "ALERT" in reason or "CERTIFICATE" in reason:
        return ConnectError("tls-rejected", reason.lower().replace("_", " "))
    return ConnectError("tls", str(error))


def client_context(tls: TlsSettings) -> ssl.SSLContext | ConnectError:
    """The client side the docker CLI would use; errors here mean unusable files."""
    # Only the given CA is trusted, as with the docker CLI (not the system's store).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if tls.verify:
            context.load_verify_locations(cafile=str(tls.ca))
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if tls.cert.exists() or tls.key.exists():
            context.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError, ValueError) as error:
        return ConnectError("tls", f"the client certificate files cannot be used: {error}")
    return context


def ping(target: Target, tls: TlsSettings | None, timeout: float) -> PingResult:
    # Connect first: "nothing listens" is the more useful answer than "bad files".
    sock = _connect(target, timeout)
    if isinstance(sock, ConnectError):
        return sock
    context: ssl.SSLContext | None = None
    if tls is not None and target.scheme == "tcp":
        made = client_context(tls)
        if isinstance(made, ConnectError):
            sock.close()
            return made
        context = made
    try:
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=target.host)
        sock.sendall(_REQUEST)
        data = bytearray()
        while len(data) < MAX_REPLY:
            chunk = sock.recv(MAX_REPLY - len(data))
            if not chunk:
                break
            data += chunk
    except ssl.SSLError as error:
        return _ssl_error(error)
    except OSError as error:
        return _os_error(error)
    finally:
        sock.close()
    return RawResponse(bytes(data))


def server_certificate(target: Target, tls: TlsSettings, timeout: float) -> bytes | ConnectError:
    """The daemon's leaf certificate, fetched without trusting it (so it can be judged).

    The client certificate is offered when usable, so the daemon does not log a
    handshake error for this probe.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # Unusable files are judged by the tls.* checks; the server certificate is still worth reading.
    with contextlib.suppress(OSError, ssl.SSLError, ValueError):
        context.load_cert_chain(str(tls.cert), str(tls.key))
    sock = _connect(target, timeout)
    if isinstance(sock, ConnectError):
        return sock
    try:
        with context.wrap_socket(sock, server_hostname=target.host) as tls_sock:
            der = tls_sock.getpeercert(binary_form=True)
    except ssl.SSLError as error:
        return _ssl_error(error)
    except OSError as error:
        return _os_error(error)
    finally:
        sock.close()
    if not der:
        return ConnectError("tls", "the daemon presented no certificate")
    return der
