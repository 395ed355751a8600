"""Object stores on 127.0.0.1 for the `gs://` and `s3://` tests: a GCS emulator
(`gcp-storage-emulator`, reached through `STORAGE_EMULATOR_HOST`, which google-cloud-storage
honours) and moto's S3 server (reached through Beam's `--s3_endpoint_url`). Both speak the real
HTTP protocols to the real clients Beam's `gcsio` and `s3io` use; nothing leaves the machine.

Not installed: the `gs://`/`s3://` tests and `benchmarks/predict_batch.py` both use it, and the
benchmarks may not import the tests nor the tests the benchmarks (tests/test_benchmarks.py), so
it is a package of its own beside them, like `digit_tasks/`, and imports neither.

    with gcs_emulator(tmp_path) as store:     # or s3_server(tmp_path)
        store.create_bucket("photos")
        store.upload("photos", "a/cat.jpg", data)
        subprocess.run([...], env=store.env)    # the command sees the store
"""
import contextlib
import http.server
import json
import os
import threading
from functools import partial


class Store:
    """A running store: `scheme` ("gs" or "s3"), `env` (os.environ plus what reaches it),
    `beam_options` (the Beam options that reach it), and a client to fill and read it."""

    def __init__(self, scheme, env, beam_options, client):
        self.scheme = scheme
        self.env = env
        self.beam_options = beam_options
        self._client = client

    def url(self, bucket, key=""):
        return f"{self.scheme}://{bucket}/{key}"

    def create_bucket(self, bucket):
        if self.scheme == "gs":
            self._client.create_bucket(bucket)
        else:
            self._client.create_bucket(Bucket=bucket)

    def upload(self, bucket, key, data):
        if self.scheme == "gs":
            self._client.bucket(bucket).blob(key).upload_from_string(data)
        else:
            self._client.put_object(Bucket=bucket, Key=key, Body=data)

    def keys(self, bucket, prefix=""):
        if self.scheme == "gs":
            return sorted(blob.name for blob in self._client.list_blobs(bucket, prefix=prefix))
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                      Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def download(self, bucket, key):
        if self.scheme == "gs":
            return self._client.bucket(bucket).blob(key).download_as_bytes()
        return self._client.get_object(Bucket=bucket, Key=key)["Body"].read()


@contextlib.contextmanager
def _environment(values):
    """`values` set in os.environ for the block (the tests' own process reads the store too),
    the earlier values back afterwards."""
    earlier = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in earlier.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def gcs_emulator(folder):
    """A GCS emulator on 127.0.0.1 (in memory), stopped when the block ends.

    Args:
        folder: pathlib.Path. Where the fake credentials file goes.
    """
    from gcp_storage_emulator.server import RequestHandler
    from gcp_storage_emulator.storage import Storage
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    # The emulator's own server is an http.server.HTTPServer: one request at a time, so one
    # slow client (two workers and the launcher share it) would stall the others. The same
    # handler and in-memory storage, on a threading server on a free port.
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(RequestHandler, Storage(use_memory_fs=True)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # Beam looks for Google credentials before it reads GCS; with none it retries for about
    # 30 s in every process (the launcher and each worker) before it connects anonymously.
    # These are found at once and never refreshed (a token that does not expire); the
    # emulator accepts any.
    credentials = folder / "fake-google-credentials.json"
    credentials.write_text(json.dumps({
        "type": "authorized_user", "client_id": "test", "client_secret": "test",
        "refresh_token": "test", "token": "test", "expiry": "2099-01-01T00:00:00Z"}))
    values = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{server.server_address[1]}",
              "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
              "GOOGLE_CLOUD_PROJECT": "test-project"}
    try:
        with _environment(values):
            client = storage.Client(project="test-project", credentials=AnonymousCredentials())
            yield Store("gs", dict(os.environ), [], client)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def s3_server(folder):
    """moto's S3 server on 127.0.0.1 (a free port), stopped when the block ends.

    Args:
        folder: pathlib.Path. Unused; the same signature as `gcs_emulator`.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto accepts any key; boto3 refuses to sign without one, and needs a region.
    values = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
              "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        with _environment(values):
            client = boto3.client("s3", endpoint_url=endpoint)
            yield Store("s3", dict(os.environ), [f"--s3_endpoint_url={endpoint}"], client)
    finally:
        server.stop()
