"""A small local stand-in for the Hugging Face Hub's HTTP API, for the ``hf://`` tests.

No network is reachable here, so the tests point ``HF_ENDPOINT`` at this loopback server.
It implements just what ``huggingface_hub`` 2.4 calls for ``CommitScheduler`` and for
reading a dataset back (read in its source: ``HfApi.create_repo``, ``_fetch_upload_modes``,
``_send_commit``, ``list_repo_tree``, ``repo_info``, ``get_hf_file_metadata``,
``snapshot_download``):

- ``POST /api/repos/create``: 200 with the repository's url, 409 when it exists;
- ``POST /api/datasets/{id}/preupload/{rev}``: every file is "regular" (committed inline,
  base64 in the commit: no LFS or Xet upload, as the Hub does for small text files);
- ``POST /api/datasets/{id}/commit/{rev}``: the ndjson commit (header, then ``file`` lines);
- ``GET /api/datasets/{id}/revision/{rev}`` and ``/tree/{rev}``: the repository's files;
- ``HEAD``/``GET /datasets/{id}/resolve/{rev}/{path}``: one file, with the commit and etag
  headers ``hf_hub_download`` reads.

It stores what it receives in memory (``repos``) and records every request (``requests``),
so a test reads back exactly what a Space would have pushed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return self.commits[-1] if self.commits else "0" * 40


@dataclass
class Hub:
    """What the stand-in holds: dataset id -> repository, and the requests it answered."""

    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


_API = re.compile(r"^/api/datasets/([^/]+/[^/]+)/(revision|tree|preupload|commit)/([^/]+)(/.*)?$")
_RESOLVE = re.compile(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, data: object, headers: dict[str, str] | None = None):
            self._send(
                status,
                json.dumps(data).encode(),
                {"Content-Type": "application/json", **(headers or {})},
            )

        def _not_found(self) -> None:
            self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            hub.requests.append(("POST", path))
            body = self._body()
            if path == "/api/repos/create":
                payload = json.loads(body)
                repo_id = f"{payload['organization']}/{payload['name']}"
                with hub.lock:
                    if repo_id in hub.repos:
                        return self._json(
                            409,
                            {
                                "error": "You already created this dataset repo",
                                "url": f"{hub.url}/datasets/{repo_id}",
                            },
                        )
                    hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
                return self._json(200, {"url": f"{hub.url}/datasets/{repo_id}", "name": repo_id})
            m = _API.match(path)
            if not m or m.group(1) not in hub.repos:
                return self._not_found()
            repo = hub.repos[m.group(1)]
            if m.group(2) == "preupload":
                files = json.loads(body)["files"]
                return self._json(
                    200,
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                            for f in files
                        ]
                    },
                )
            if m.group(2) == "commit":
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                with hub.lock:
                    for line in lines:
                        if line["key"] == "file":
                            value = line["value"]
                            repo.files[value["path"]] = base64.b64decode(value["content"])
                        elif line["key"] != "header":
                            return self._json(400, {"error": f"unsupported {line['key']}"})
                    sha = hashlib.sha1(
                        f"{len(repo.commits)}{sorted(repo.files)}".encode()
                    ).hexdigest()
                    repo.commits.append(sha)
                return self._json(
                    200,
                    {
                        "commitUrl": f"{hub.url}/datasets/{m.group(1)}/commit/{sha}",
                        "commitOid": sha,
                    },
                )
            return self._not_found()

        def do_GET(self) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path))
            m = _API.match(path)
            if m:
                repo = hub.repos.get(m.group(1))
                if repo is None:
                    return self._not_found()
                if m.group(2) == "revision":
                    return self._json(
                        200,
                        {
                            "id": m.group(1),
                            "sha": repo.sha,
                            "private": repo.private,
                            "siblings": [{"rfilename": p} for p in sorted(repo.files)],
                        },
                    )
                if m.group(2) == "tree":
                    return self._json(
                        200,
                        [
                            {
                                "type": "file",
                                "path": p,
                                "size": len(data),
                                "oid": hashlib.sha1(data).hexdigest(),
                            }
                            for p, data in sorted(repo.files.items())
                        ],
                    )
            m = _RESOLVE.match(path)
            if m:
                repo = hub.repos.get(m.group(1))
                if repo is None:
                    return self._not_found()
                data = repo.files.get(m.group(3))
                if data is None:
                    return self._json(
                        404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"}
                    )
                return self._send(
                    200,
                    data,
                    {
                        "X-Repo-Commit": repo.sha,
                        "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                        "Content-Type": "application/octet-stream",
                    },
                )
            return self._not_found()

        do_HEAD = do_GET

    return Handler


@contextmanager
def hub_standin() -> Iterator[Hub]:
    """A running stand-in on a free loopback port; ``hub.url`` is its HF_ENDPOINT."""
    hub = Hub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
