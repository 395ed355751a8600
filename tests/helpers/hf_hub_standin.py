"""A local stand-in for the Hugging Face Hub, for the `hf://` tests: the requests that
huggingface_hub's `hf_hub_download` (and keras-hub's `hf://` loader, which calls it) makes,
answered from a dict on 127.0.0.1, reached through `HF_ENDPOINT`.

What it serves, as the Hub does (read from huggingface_hub 2.4.0's file_download.py,
utils/_http.py and hf_api.py):

* `HEAD`/`GET /{owner}/{name}/resolve/{revision}/{path}`: the file, with the headers
  `get_hf_file_metadata` reads: `X-Repo-Commit` (the commit the revision resolves to; the
  cache's snapshot folder), `ETag` (the blob's name in the cache) and `Content-Length` (checked
  against the bytes received). LFS files (`*.safetensors`, `*.h5`) answer `302` to a "CDN" on
  another host (`localhost` for `127.0.0.1`) with `X-Linked-Etag` and `X-Linked-Size`, as the
  Hub does: huggingface_hub takes the metadata from the redirect and does not send the token
  to the CDN.
* `GET /api/models/{owner}/{name}[/revision/{revision}]`: the revision lookup of
  `HfApi.model_info` (`sha` and `siblings`).
* `404` with `X-Error-Code` `RepoNotFound`, `RevisionNotFound` or `EntryNotFound`, from which
  huggingface_hub raises `RepositoryNotFoundError`, `RevisionNotFoundError` or
  `RemoteEntryNotFoundError`.

huggingface_hub reads `HF_ENDPOINT` (and its cache and offline settings) when it is imported;
`configure_environment` sets them for the test session (tests/conftest.py calls it first).
"""
import atexit
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import urllib.parse
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".h5")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def configure_environment():
    """Points huggingface_hub at a port reserved for this process's stand-ins, with its cache in
    a temporary `HF_HOME` (removed at exit), telemetry off and none of the user's Hub settings
    (token, offline mode, another endpoint or cache). Must run before huggingface_hub is
    imported, which reads these once."""
    if "huggingface_hub" in sys.modules:
        raise RuntimeError("huggingface_hub was imported before the test environment was set; "
                           "expected tests/conftest.py to run first; got it in sys.modules")
    with socket.socket() as probe:  # a free port, for this process's stand-ins (one at a time)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tempfile.mkdtemp(prefix="keras_resnest_hf_home_")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "HF_XET_CACHE", "HF_TOKEN_PATH"):
        os.environ.pop(name, None)
    os.environ.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=home,
                      HF_HUB_CACHE=os.path.join(home, "hub"), HF_HUB_DISABLE_TELEMETRY="1",
                      HF_HUB_DISABLE_PROGRESS_BARS="1")


def endpoint_port():
    """The port of `HF_ENDPOINT` (set by `configure_environment`)."""
    return urllib.parse.urlparse(os.environ["HF_ENDPOINT"]).port


def directory_files(directory):
    """`{relative path: bytes}` of every file under `directory` (e.g. a `save_to_preset`
    directory, served as a repository)."""
    root = Path(directory)
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


def _commit_of(repo_id, revision, files):
    if _COMMIT.fullmatch(revision):
        return revision
    digest = hashlib.sha1(f"{repo_id}@{revision}".encode())
    for name in sorted(files):
        digest.update(name.encode() + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802 (http.server API)
        self._answer(body=False)

    def do_GET(self):  # noqa: N802 (http.server API)
        self._answer(body=True)

    def log_message(self, *args):
        pass

    def _answer(self, body):
        hub = self.server.hub
        hub.requests.append({"method": self.command, "path": self.path, "host":
                             self.headers.get("Host", ""),
                             "headers": {k.lower(): v for k, v in self.headers.items()}})
        parts = [urllib.parse.unquote(part) for part in self.path.split("?")[0].split("/")]
        if parts[1:2] == ["cdn"] and len(parts) == 3:
            return self._cdn(parts[2], body)
        if parts[1:3] == ["api", "models"] and len(parts) >= 5:
            revision = parts[6] if parts[5:6] == ["revision"] and len(parts) == 7 else "main"
            return self._model_info(f"{parts[3]}/{parts[4]}", revision)
        if len(parts) >= 6 and parts[3] == "resolve":
            return self._resolve(f"{parts[1]}/{parts[2]}", parts[4], "/".join(parts[5:]), body)
        self._error(404, None)

    def _lookup(self, repo_id, revision):
        """(commit, files) of a revision name or commit, or an error answered (None)."""
        revisions = self.server.hub.repos.get(repo_id)
        if revisions is None:
            return self._error(404, "RepoNotFound")
        for name, files in revisions.items():
            commit = _commit_of(repo_id, name, files)
            if revision in (name, commit):
                return commit, files
        return self._error(404, "RevisionNotFound")

    def _resolve(self, repo_id, revision, filename, body):
        found = self._lookup(repo_id, revision)
        if found is None:
            return
        commit, files = found
        data = files.get(filename)
        if data is None:
            return self._error(404, "EntryNotFound", {"X-Repo-Commit": commit})
        sha256 = hashlib.sha256(data).hexdigest()
        if filename.endswith(LFS_SUFFIXES):
            self.server.hub.blobs[sha256] = data
            cdn = f"http://localhost:{self.server.server_address[1]}/cdn/{sha256}"
            self.send_response(302)
            self.send_header("Location", cdn)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("X-Linked-Etag", f'"{sha256}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha1(sha256.encode()).hexdigest()}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(data, body, {"X-Repo-Commit": commit,
                                "ETag": f'"{hashlib.sha1(data).hexdigest()}"'})

    def _cdn(self, sha256, body):
        data = self.server.hub.blobs.get(sha256)
        if data is None:
            return self._error(404, None)
        self._send(data, body, {"ETag": f'"{sha256}"'})

    def _model_info(self, repo_id, revision):
        found = self._lookup(repo_id, revision)
        if found is None:
            return
        commit, files = found
        info = {"id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                "siblings": [{"rfilename": name} for name in sorted(files)]}
        self._send(json.dumps(info).encode(), True, {"Content-Type": "application/json"})

    def _send(self, data, body, headers):
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status, code, headers=None):
        message = json.dumps({"error": code or "Not Found"}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(message)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(message)


class HubStandIn:
    """The stand-in, serving on 127.0.0.1 from a thread until `stop()`.

    Args:
        repos: dict. `{repo_id: {revision: {filename: bytes}}}`; a revision is a branch or tag
            name (its commit hash is derived from the repository, the name and the files) or a
            40-hex commit. Changed in place by the tests as they go. Defaults to None (empty).
        port: int. The port; `HF_ENDPOINT`'s by default (huggingface_hub calls that one).

    Attributes:
        requests: list of `{"method", "path", "host", "headers"}` (header names in lower case),
            in the order received.
    """

    def __init__(self, repos=None, port=None):
        self.repos = {} if repos is None else repos
        self.requests = []
        self.blobs = {}
        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", endpoint_port() if port is None else port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.hub = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def commit(self, repo_id, revision="main"):
        """The commit hash a revision of a served repository resolves to."""
        return _commit_of(repo_id, revision, self.repos[repo_id][revision])

    def requested(self, filename):
        """The requests made for `filename` (any repository, revision or method)."""
        return [r for r in self.requests if urllib.parse.unquote(r["path"]).endswith(
            "/" + filename)]

    def stop(self):
        """Stops serving: connections to the port are refused from now on."""
        if self._thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
