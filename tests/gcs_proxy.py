"""TensorFlow's gs:// filesystem against a local GCS emulator, for tests.

TF's filesystem talks HTTPS to www.googleapis.com and storage.googleapis.com (hosts it hard-codes) through
libcurl, which honours HTTPS_PROXY and CURL_CA_BUNDLE. This module runs a small proxy on 127.0.0.1 that answers
CONNECT, terminates TLS with a certificate for those hosts signed by a throw-away CA made here, and forwards each
request over plain HTTP to `gcp-storage-emulator`. `tf_env` gives the variables a TF process needs
(GOOGLE_AUTH_TOKEN_FOR_TESTING skips authentication).

The emulator mishandles zero-byte uploads, which TF uses for directory markers ("dir/" objects): the proxy
answers those itself, as GCS would, without storing anything (gs:// has no directories; listings still work).

Both can inject faults (`Faults`): a share of requests answered 503 or 429, or the connection reset, either before
the request reaches the emulator or, for downloads, halfway through the response body. `Forwarder` is the plain-HTTP
version for Beam's client (google-cloud-storage, pointed at it by STORAGE_EMULATOR_HOST).
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import random
import socket
import struct
import ssl
import threading
import urllib.parse

HOSTS = ("www.googleapis.com", "storage.googleapis.com")


def make_ca(folder: str) -> tuple[str, str, str]:
    """A CA and a leaf certificate for HOSTS signed by it; → (ca.pem, leaf.pem, leaf.key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "segprep test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = [os.path.join(folder, name) for name in ("ca.pem", "leaf.pem", "leaf.key")]
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return tuple(paths)


class Faults:
    """Answers a `rate` share of requests (drawn from a seeded generator) with a fault, the kinds taken in turn:
    503, 429, a reset before the request is forwarded, and a reset halfway through the response body (saved for the
    next GET, where a retry is always safe; a 503 stands in meanwhile). `injected` counts them by kind; `requests`
    counts every request seen."""

    KINDS = ("503", "429", "reset", "reset_mid_body")

    def __init__(self, rate: float, seed: int = 0):
        self.rate, self._rng, self._lock, self._turn = rate, random.Random(seed), threading.Lock(), 0
        self.requests, self.injected = 0, dict.fromkeys(self.KINDS, 0)

    def draw(self, method: str) -> str | None:
        with self._lock:
            self.requests += 1
            if self._rng.random() >= self.rate:
                return None
            kind = self.KINDS[self._turn % len(self.KINDS)]
            if kind == "reset_mid_body" and method != "GET":
                kind = "503"
            else:
                self._turn += 1
            self.injected[kind] += 1
            return kind


class _Reset(Exception):
    """Drop this connection with a TCP reset."""


class _Server:
    """Accepts connections on 127.0.0.1 and forwards each HTTP request on them to the emulator at `target`."""

    public_url = ""  # what the emulator's own address is rewritten to in Location headers

    def __init__(self, target_port: int, faults: Faults | None = None):
        self.target, self.faults = target_port, faults
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._stop = False

    def start(self) -> None:
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._stop = True
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            # Small writes back to back (CONNECT's answer, then TLS): without this, Nagle's algorithm against the
            # client's delayed ACK costs 40 ms a request.
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._connection, args=(client,), daemon=True).start()

    def _connection(self, client: socket.socket) -> None:
        stream = client  # after a TLS handshake, the wrapper owns the connection
        try:
            stream = self._open(client)
            self._requests(stream)
        except _Reset:
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            stream.close()

    def _open(self, client: socket.socket):
        return client

    def _requests(self, stream) -> None:
        """Answers the requests on one connection (`stream`: the socket, or its TLS wrapping) until it closes."""
        reader = stream.makefile("rb")
        while True:
            request = _read_request(reader, stream)
            if request is None:
                return
            kind = self.faults.draw(request[0]) if self.faults else None
            if kind in ("503", "429"):
                body = json.dumps({"error": {"code": int(kind), "message": "injected fault"}}).encode()
                stream.sendall(_response(int(kind), {"Content-Type": "application/json"}, body))
                continue
            if kind == "reset":
                raise _Reset
            answer = self._forward(*request)
            if kind == "reset_mid_body":
                head = answer.index(b"\r\n\r\n") + 4
                stream.sendall(answer[:head + (len(answer) - head) // 2])
                raise _Reset
            stream.sendall(answer)

    def _forward(self, method: str, path: str, headers: dict, body: bytes) -> bytes:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        if method == "POST" and "/upload/" in path and query.get("name", [""])[0].endswith("/"):
            # A directory marker (zero bytes): the emulator cannot store it; answer as GCS would.
            name = query["name"][0]
            payload = json.dumps({"name": name, "size": "0", "generation": "1",
                                  "updated": "2026-01-01T00:00:00.000Z"}).encode()
            return _response(200, {"Content-Type": "application/json"}, payload)
        conn = http.client.HTTPConnection("127.0.0.1", self.target, timeout=60)
        headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "proxy-connection", "connection",
                                                                       "transfer-encoding", "expect")}
        headers["Host"] = f"127.0.0.1:{self.target}"
        headers["Content-Length"] = str(len(body))
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        out = {k: v for k, v in resp.getheaders() if k.lower() not in ("transfer-encoding", "connection",
                                                                        "content-length")}
        for k, v in list(out.items()):  # resumable uploads continue through the proxy, as on real GCS
            if k.lower() == "location":
                out[k] = v.replace(f"http://127.0.0.1:{self.target}", self.public_url)
        conn.close()
        return _response(resp.status, out, data, resp.reason)


class Forwarder(_Server):
    """Plain HTTP on 127.0.0.1 to the emulator, with `faults`: point STORAGE_EMULATOR_HOST at `url`."""

    def __init__(self, target_port: int, faults: Faults | None = None):
        super().__init__(target_port, faults)
        self.url = self.public_url = f"http://127.0.0.1:{self.port}"
        self.start()


class Proxy(_Server):
    """CONNECT proxy terminating TLS for HOSTS and forwarding to the emulator at http://127.0.0.1:`target`."""

    public_url = f"https://{HOSTS[0]}"

    def __init__(self, target_port: int, folder: str, faults: Faults | None = None):
        super().__init__(target_port, faults)
        self.ca, cert, key = make_ca(folder)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.start()

    def tf_env(self) -> dict:
        return {"HTTPS_PROXY": f"http://127.0.0.1:{self.port}", "https_proxy": f"http://127.0.0.1:{self.port}",
                "CURL_CA_BUNDLE": self.ca, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "dummy",
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def _open(self, client: socket.socket):
        head = _read_head(client)
        if not head or not head.startswith(b"CONNECT "):
            raise ValueError("not a CONNECT")
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        return self.context.wrap_socket(client, server_side=True)


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return b""
        data += chunk
    return data


def _read_request(reader, sock) -> tuple[str, str, dict, bytes] | None:
    line = reader.readline()
    if not line or not line.strip():
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while True:
        h = reader.readline().decode("latin-1")
        if h in ("\r\n", "\n", ""):
            break
        k, _, v = h.partition(":")
        headers[k.strip()] = v.strip()
    lower = {k.lower(): v for k, v in headers.items()}
    if lower.get("expect", "").lower() == "100-continue":  # else libcurl waits a second before sending the body
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    if lower.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(reader.readline().split(b";")[0].strip(), 16)
            if size == 0:
                reader.readline()
                break
            body += reader.read(size)
            reader.readline()
    else:
        body = reader.read(int(lower.get("content-length", "0") or 0))
    return method, path, headers, body


def _response(status: int, headers: dict, body: bytes, reason: str = "") -> bytes:
    reason = reason or http.client.responses.get(status, "")
    head = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    head += [f"Content-Length: {len(body)}", "Connection: keep-alive"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
