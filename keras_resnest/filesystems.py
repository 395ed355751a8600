"""Paths on any Apache Beam filesystem (`gs://`, `s3://`, `hdfs://` or local), read through
`apache_beam.io.filesystems.FileSystems`, for `predict-batch`'s model, labels and weights
mirror.

Beam is imported only for a path with a scheme, so local paths work without it. Beam's
filesystems take their options (`--s3_endpoint_url`, credentials, ...) from
`FileSystems.set_options`, which a `beam.Pipeline` and Beam's workers call; the launcher calls
it before its checks.

Example:
    >>> is_remote("photos/cat.jpg"), is_remote("hf://timm/resnest14d.gluon_in1k")
    (False, False)
"""
import contextlib
import os
import re
import shutil
import tempfile

SCHEME = re.compile(r"\A([a-zA-Z][a-zA-Z0-9+.-]+)://")
CHUNK = 1 << 20
# Not Beam filesystems: weights specs that name a Hub repository (keras_resnest.weights.hf_hub)
# and web mirrors, which Keras' get_file downloads (keras_resnest.weights.pretrained).
NOT_FILESYSTEMS = ("hf", "http", "https", "ftp")


def scheme(path):
    """"gs" for "gs://b/x", None for a local path."""
    match = SCHEME.match(str(path))
    return match.group(1).lower() if match else None


def is_remote(path):
    """True for a path with a scheme Beam may read (gs://, s3://, ...): not a local one, not
    hf:// (a Hub repository, fetched by its own client), not a web URL."""
    found = scheme(path)
    return found is not None and found not in ("file", *NOT_FILESYSTEMS)


def filesystem_problem(path):
    """Why Beam has no filesystem for `path` (its scheme unknown, or the client library
    missing), or None."""
    from apache_beam.io.filesystems import FileSystems

    try:
        FileSystems.get_filesystem(str(path))
    except ValueError:
        return (f"expected a local path or one on a Beam filesystem (gs:// and s3:// need "
                f'pip install "keras-resnest[beam]"), no filesystem reads {scheme(path)}://')
    return None


def exists(path):
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.exists(str(path))


def read_bytes(path):
    from apache_beam.io.filesystems import FileSystems

    # application/octet-stream: no decompression guessed from the name (".gz").
    with FileSystems.open(str(path), mime_type="application/octet-stream") as handle:
        return handle.read()


def copy_to_local(path, destination):
    """Copy `path` (any Beam filesystem) to the local file `destination`, in chunks."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(str(path), mime_type="application/octet-stream") as source, \
            open(destination, "wb") as target:
        shutil.copyfileobj(source, target, CHUNK)


@contextlib.contextmanager
def local_copy(path):
    """The local path of `path` for libraries that open files themselves (Keras, h5py): a
    local path as it is; a remote file copied into a temporary folder under its own name (the
    suffix tells `.keras` from `.weights.h5`), removed when the block ends."""
    if not is_remote(path):
        yield path
        return
    from apache_beam.io.filesystems import FileSystems

    with tempfile.TemporaryDirectory(prefix="keras_resnest-") as folder:
        local = os.path.join(folder, FileSystems.split(str(path))[1])
        copy_to_local(path, local)
        yield local


def beside(path, name):
    """The file `name` in the folder of `path`, on the filesystem of `path`."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(FileSystems.split(str(path))[0], name)


def bucket_problem(path):
    """Why the bucket of a `gs://` or `s3://` path cannot be used (it does not exist, or these
    credentials may not read it), or None; None for other filesystems.

    Asked of the store itself because Beam's listing cannot tell: a glob in a missing S3
    bucket lists as empty (s3io treats the 404 as no files), and a write into a missing GCS
    bucket fails only after its retries, at the end of the job.
    """
    found = scheme(path)
    bucket = str(path)[len(found) + 3:].split("/", 1)[0] if found else ""
    try:
        if found == "gs":
            if _gcs_bucket_missing(bucket):
                return f"bucket gs://{bucket} does not exist"
        elif found == "s3":
            if _s3_bucket_missing(bucket):
                return f"bucket s3://{bucket} does not exist"
    except Exception as error:  # noqa: BLE001  (no access, no credentials, no network, ...)
        return f"bucket {found}://{bucket} cannot be read ({one_line(error)})"
    return None


def _gcs_bucket_missing(bucket):
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.io.gcp import gcsio

    # The pipeline's options (credentials, project), as Beam's GCS filesystem uses them.
    options = FileSystems._pipeline_options  # noqa: SLF001  (set by FileSystems.set_options)
    return gcsio.GcsIO(pipeline_options=options).get_bucket(bucket) is None


def _s3_bucket_missing(bucket):
    from apache_beam.io.aws.clients.s3 import boto3_client
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    from botocore.exceptions import ClientError

    # The client Beam's S3 filesystem builds from --s3_endpoint_url, --s3_region_name, ...
    options = FileSystems._pipeline_options or PipelineOptions([])  # noqa: SLF001
    try:
        boto3_client.Client(options=options).client.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
            return True
        raise
    return False


def one_line(error):
    """A Beam filesystem error on one line: BeamIOError wraps the real one per path
    (`exception_details`)."""
    details = getattr(error, "exception_details", None)
    if isinstance(details, dict) and details:
        error = next(iter(details.values()))
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
