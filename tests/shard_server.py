"""An HTTP server for tests: serves a folder on 127.0.0.1 (a free port), with Range requests
(or without, to test that path), and faults injected per file and request: a status code, a
connection dropped after some bytes, a slow response. Started and stopped by the test itself."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class ShardServer:
    """``with ShardServer(folder) as server: server.url("a.tar")``. ``faults[name]`` is a list
    consumed one entry per request of that file: None (serve normally), an int (answer with that
    HTTP status), ``("drop", n)`` (send the headers of the whole file, then n bytes, then close
    the connection), ``("slow", seconds)`` (wait, then serve). ``requests`` records (name, Range
    header) of every request."""

    def __init__(self, root: Path, ranges: bool = True):
        self.root, self.ranges = Path(root), ranges
        self.faults: dict[str, list] = {}
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                name = self.path.lstrip("/").split("?")[0]
                with server._lock:
                    server.requests.append((name, self.headers.get("Range")))
                    queue = server.faults.get(name) or []
                    fault = queue.pop(0) if queue else None
                path = server.root / name
                if isinstance(fault, int):
                    self.send_error(fault)
                    return
                if isinstance(fault, tuple) and fault[0] == "slow":
                    time.sleep(fault[1])
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                wanted = self.headers.get("Range")
                if wanted and server.ranges and wanted.startswith("bytes="):
                    start = int(wanted[len("bytes=") :].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                if server.ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("ETag", f'"{len(data)}-{int(path.stat().st_mtime_ns)}"')
                self.end_headers()
                if not body:
                    return
                payload = data[start:]
                if isinstance(fault, tuple) and fault[0] == "drop":
                    self.wfile.write(payload[: fault[1]])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, address: None  # a client that hung up
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, name: str = "") -> str:
        """The URL of ``name`` under the served folder."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> "ShardServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
