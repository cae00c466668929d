"""A real HTTP server on 127.0.0.1 serving a folder, for the download paths (mill-data, resilience tests)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Any


class CutShortHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder quietly, each file with an ETag that changes with its size or modification time (as
    nginx's does); files whose URL path (``/test/1.tar``) is in ``cut_short`` are sent half-way, then the
    connection closes with the full Content-Length announced, as by a server dying mid-transfer."""

    def __init__(self, *args: Any, cut_short: Collection[str], **kwargs: Any) -> None:
        self.cut_short = cut_short
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_header(self, keyword: str, value: str) -> None:
        super().send_header(keyword, value)
        if keyword == "Last-Modified":  # sent for a file only
            stat = Path(self.translate_path(self.path)).stat()
            super().send_header("ETag", f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"')

    def copyfile(self, source: Any, outputfile: Any) -> None:
        if self.path not in self.cut_short:
            super().copyfile(source, outputfile)
            return
        data = source.read()
        outputfile.write(data[: len(data) // 2])
        self.close_connection = True


def start_server(directory: Path, cut_short: Collection[str] = ()) -> http.server.ThreadingHTTPServer:
    """A server on a free port of 127.0.0.1 serving ``directory`` from a daemon thread; the caller shuts it
    down. ``cut_short`` is read per request, so a test may change it to heal the server."""
    handler = functools.partial(CutShortHandler, directory=str(directory), cut_short=cut_short)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def base_url(server: http.server.ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"
