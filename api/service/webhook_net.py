"""The webhook sender's HTTP: one POST to a URL a user gave, which must not become a way into the service's own
network (SSRF). The host is resolved at send time (so a name that later resolves elsewhere, DNS rebinding, is
caught) and every address it resolves to is checked; the connection goes to the checked address itself (never
resolved again), the ``Host`` header and TLS name stay the URL's. Time, the answer's size and redirects are
bounded: a redirect is followed only with 307 or 308 (which keep the POST), at most ``MAX_REDIRECTS``, each
target checked like the first.

Always refused: link-local (169.254.0.0/16, fe80::/10, so the cloud metadata address 169.254.169.254 too, and
fd00:ec2::254), unspecified, multicast and reserved addresses. Refused unless ``WEBHOOK_ALLOW_PRIVATE``: loopback,
private ranges (10/8, 172.16/12, 192.168/16, fc00::/7) and shared address space (100.64/10).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 3
MAX_ANSWER = 64 * 1024  # bytes of an answer read (and at most 500 kept as the delivery's error)
RESOLVE_TIMEOUT = 5.0
METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
                      ipaddress.ip_address("100.100.100.200")})  # AWS/GCP/Azure, AWS IPv6, Alibaba
SHARED = ipaddress.ip_network("100.64.0.0/10")


class UnsafeUrl(ValueError):
    """A URL the sender refuses to reach (the message says why)."""


class Unresolvable(UnsafeUrl):
    """A host that does not resolve now (refused at send time; at registration it may resolve later)."""


class DeliveryError(Exception):
    """A delivery that got no HTTP answer (or a refused redirect): the message says what happened."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def check_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path with query)`` of an http(s) URL with a host and no credentials in it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("the URL must start with http:// or https://")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("the URL may not hold a user name or password (the signature authenticates deliveries)")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def check_address(address: str, allow_private: bool) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``address`` if the sender may connect to it, else ``UnsafeUrl`` saying why."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA:
        raise UnsafeUrl(f"{ip} is the cloud metadata address")
    if ip.is_link_local:
        raise UnsafeUrl(f"{ip} is a link-local address")
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        raise UnsafeUrl(f"{ip} is not an address a webhook may reach")
    if not allow_private:
        if ip.is_loopback:
            raise UnsafeUrl(f"{ip} is a loopback address (an admin may allow private addresses: "
                            "WEBHOOK_ALLOW_PRIVATE)")
        if ip.is_private or (isinstance(ip, ipaddress.IPv4Address) and ip in SHARED):
            raise UnsafeUrl(f"{ip} is a private address (an admin may allow private addresses: "
                            "WEBHOOK_ALLOW_PRIVATE)")
    return ip


def resolve(host: str, port: int, timeout: float = RESOLVE_TIMEOUT) -> list[str]:
    """Every address ``host`` resolves to now (``getaddrinfo`` in a thread: it has no timeout of its own)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    found: list[str] = []
    error: list[BaseException] = []

    def look_up() -> None:
        try:
            found.extend(dict.fromkeys(info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)))
        except (OSError, UnicodeError, ValueError) as exc:  # UnicodeError: a name IDNA cannot encode
            error.append(exc)

    thread = threading.Thread(target=look_up, name="webhook-resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise Unresolvable(f"{host} did not resolve within {timeout:.0f} s")
    if error or not found:
        raise Unresolvable(f"{host} does not resolve ({error[0] if error else 'no address'})")
    return found


def safe_target(url: str, allow_private: bool) -> tuple[str, str, int, str, str]:
    """``(scheme, host, port, path, address)``: the URL checked, resolved now, and every address checked; the
    first is the one to connect to."""
    scheme, host, port, path = check_url(url)
    addresses = resolve(host, port)
    for address in addresses:
        check_address(address, allow_private)
    return scheme, host, port, path, addresses[0]


class _Pinned(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool, timeout: float) -> Answer:
    """POST ``body`` to ``url`` within ``timeout`` seconds in all, following at most ``MAX_REDIRECTS`` 307/308
    redirects (each checked). ``UnsafeUrl`` for a refused address, ``DeliveryError`` for no answer."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port, path, address = safe_target(url, allow_private)
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeliveryError(f"no answer within {timeout:.0f} s")
        kind = _PinnedTLS if scheme == "https" else _Pinned
        conn = kind(host, port, address, left)
        try:
            conn.request("POST", path, body=body, headers={**headers, "Content-Length": str(len(body))})
            response = conn.getresponse()
            data = b""
            while len(data) < MAX_ANSWER:
                if time.monotonic() > deadline:
                    raise DeliveryError(f"the answer took over {timeout:.0f} s")
                chunk = response.read1(MAX_ANSWER - len(data)) if hasattr(response, "read1") else b""
                if not chunk:
                    break
                data += chunk
            location = response.getheader("Location")
        except (OSError, http.client.HTTPException) as exc:
            raise DeliveryError(f"{exc.__class__.__name__}: {exc}"[:500]) from None
        finally:
            conn.close()
        if response.status in (307, 308) and location:
            url = urljoin(url, location)
            continue
        if 300 <= response.status < 400:
            raise DeliveryError(f"HTTP {response.status}: a redirect that would not keep the POST (only 307 and "
                                "308 are followed)")
        return Answer(response.status, data)
    raise DeliveryError(f"more than {MAX_REDIRECTS} redirects")
