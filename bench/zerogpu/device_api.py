"""A loopback stand-in for ZeroGPU's device API, the service the `spaces` package asks before each GPU call.

`DeviceApi` serves `/startup-report`, `/schedule`, `/allow`, `/release` and `/queue-size` on 127.0.0.1 in a
thread of the test. It grants every request, recording the duration each asks for (`durations`), or refuses as
ZeroGPU does before the function runs, as long as `refuse` names a refusal: "quota" (the visitor's quota is spent:
"You have exceeded your ... quota") or "illegal-duration" (more than ZeroGPU allows at once).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# ZeroGPU's answers (the package reads the approve result, the seconds left and the wait; a negative wait means the
# duration asked for is over the maximum)
REFUSALS = {"quota": {"left": 10, "wait": 3600}, "illegal-duration": {"left": 100, "wait": -1}}


class DeviceApi:
    """The stand-in service; `url` is what SPACES_ZERO_DEVICE_API_URL gets. Use as a context manager."""

    def __init__(self) -> None:
        self.durations: list[int] = []
        self.refuse: str | None = None
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: dict | str, headers: dict[str, str] | None = None) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/schedule":
                    return self._send(200, {})
                query = parse_qs(url.query)
                api.durations.append(int(query["durationSeconds"][0]))
                if api.refuse:
                    refusal = "quota-exceeded" if api.refuse == "quota" else api.refuse
                    return self._send(429, REFUSALS[api.refuse],
                                      {"X-Approve-Result": refusal, "X-Authenticated": "regular"})
                return self._send(200, {"idle": True, "nvidiaIndex": 0, "nvidiaUUID": "GPU-on-cpu",
                                        "allowToken": "token"}, {"X-Approve-Result": "approved"})

            def do_GET(self) -> None:
                if urlsplit(self.path).path == "/queue-size":
                    return self._send(200, "0")
                return self._send(404, {})

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> DeviceApi:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
