"""`weights="imagenet"`: the official checkpoints, downloaded, verified, converted and cached.

For each model the official `.pth` file is fetched with `keras.utils.get_file` into the Keras
cache (`$KERAS_HOME/models`, `~/.keras/models` by default). Its SHA-256 must start with the hex
in its file name, as torch.hub checks (`resnest50-528c19ca.pth`). The file is converted once
without torch and the result is cached beside it as `<file name>.weights.h5`, so later loads
read only that.

`KERAS_RESNEST_WEIGHTS_URL` selects a mirror: a base URL, or a local directory, that holds
the official file names. A local directory is read in place (nothing is copied into the
cache but the converted weights). A bucket (`gs://...`, `s3://...`, any Apache Beam
filesystem) is downloaded like a URL, through Beam's `FileSystems`: workers of
`predict-batch` that cannot reach GitHub read the weights where they read the images.

A failed download (offline, a firewall) is one `WeightsDownloadError` line naming the
alternatives: the model's timm repository on the Hugging Face Hub (`weights="hf://..."`, when
timm publishes it) and `KERAS_RESNEST_WEIGHTS_URL`.

Example:
    >>> import keras_resnest
    >>> model = keras_resnest.ResNeSt50(weights="imagenet")   # doctest: +SKIP
"""
import contextlib
import hashlib
import os
import re
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass

from keras_resnest.atomic_files import renamed_on_success
from keras_resnest.models.configs import MODEL_CONFIGS
from keras_resnest.weights.hf_hub import hub_spec_of

MIRROR_ENV = "KERAS_RESNEST_WEIGHTS_URL"
CACHE_SUBDIR = "models"
CONVERTED_SUFFIX = ".weights.h5"
IMAGENET_CLASSES = 1000

class WeightsDownloadError(OSError):
    """The official file could not be downloaded; the message names the alternatives."""


@dataclass(frozen=True)
class PretrainedFile:
    filename: str
    base_url: str

    @property
    def sha256_prefix(self):
        """The hex after the last `-`, which the file's SHA-256 must start with (torch.hub)."""
        return re.search(r"-([a-f0-9]+)\.", self.filename).group(1)

    @property
    def converted_filename(self):
        return self.filename.rsplit(".", 1)[0] + CONVERTED_SUFFIX


# model -> its official file and where it is published, from the registry's rows.
PRETRAINED_FILES = {
    name: PretrainedFile(config.weights_file, config.weights_url)
    for name, config in MODEL_CONFIGS.items() if config.weights_file
}


def pretrained_file(model_name):
    try:
        return PRETRAINED_FILES[model_name]
    except KeyError:
        raise ValueError(
            f'weights="imagenet": no ImageNet weights for {model_name!r}; available for '
            f"{', '.join(sorted(PRETRAINED_FILES))}."
        ) from None


# --------------------------------------------------------------------------------------------
# Cache and download


def cache_dir():
    """`$KERAS_HOME/models` (read at call time), `~/.keras/models` by default.

    Falls back to `/tmp/.keras/models` where the home directory is not writable, as Keras does.
    """
    base = os.environ.get("KERAS_HOME")
    if not base:
        base = os.path.join(os.path.expanduser("~"), ".keras")
        if not os.access(os.path.dirname(base), os.W_OK):
            base = os.path.join("/tmp", ".keras")
    return os.path.join(base, CACHE_SUBDIR)


def sha256_file(path, chunk_size=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _mirror():
    """(kind, location): ("url", base URL) or ("dir", local directory)."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return None
    parsed = urllib.parse.urlparse(mirror)
    if parsed.scheme == "file":
        return "dir", urllib.request.url2pathname(parsed.path)
    if parsed.scheme in ("http", "https", "ftp") or "://" in mirror:  # "://": gs, s3, ...
        return "url", mirror
    return "dir", os.path.expanduser(mirror)


def _check_hash(path, entry, delete):
    found = sha256_file(path)
    if not found.startswith(entry.sha256_prefix):
        if delete:
            os.remove(path)
        raise ValueError(
            f"{entry.filename}: SHA-256 mismatch: expected a digest starting with "
            f"{entry.sha256_prefix}, found {found[:len(entry.sha256_prefix)]} "
            f"({found}). " + ("The file was deleted; " if delete else "") +
            "the download was corrupted or the mirror serves a different file."
        )


def _remove_stale_parts(directory, filename):
    """Deletes `<filename>.<pid>.part` leftovers of processes that no longer run."""
    pattern = re.compile(re.escape(filename) + r"\.(\d+)\.part$")
    for name in os.listdir(directory):
        match = pattern.match(name)
        if not match:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))
        except PermissionError:
            pass


def _download_failure(model_name, entry, error):
    """The one line of a failed download: what failed, the alternatives, Keras' error."""
    hub = hub_spec_of(model_name)
    alternatives = [f"weights={hub!r} (timm's copy on the Hugging Face Hub)"] if hub else []
    alternatives.append(f"{MIRROR_ENV} set to a mirror URL or a local directory holding "
                        f"{entry.filename}")
    return WeightsDownloadError(
        f"weights='imagenet': downloading {entry.filename} ({model_name}) failed; expected a "
        f"reachable server, or {' or '.join(alternatives)}; got {' '.join(str(error).split())}")


def _download(entry, directory, base_url, model_name):
    """Downloads into `directory` under a temporary name, verifies, then renames.

    The final name therefore only ever holds a complete, verified file: an interrupted or
    failed download leaves nothing behind.
    """
    import keras

    os.makedirs(directory, exist_ok=True)
    _remove_stale_parts(directory, entry.filename)
    url = base_url.rstrip("/") + "/" + entry.filename
    part_name = f"{entry.filename}.{os.getpid()}.part"
    part = os.path.join(directory, part_name)
    final = os.path.join(directory, entry.filename)
    with renamed_on_success(part, final):
        # cache_dir/cache_subdir spelled out so that get_file writes exactly where we look.
        try:
            if urllib.parse.urlparse(url).scheme in ("http", "https", "ftp"):
                keras.utils.get_file(
                    fname=part_name, origin=url, cache_dir=os.path.dirname(directory),
                    cache_subdir=os.path.basename(directory), force_download=True)
            else:  # a bucket: get_file speaks only HTTP and FTP
                from keras_resnest import filesystems

                filesystems.copy_to_local(url, part)
        except Exception as error:  # Keras raises a bare Exception("URL fetch failure ...")
            raise _download_failure(model_name, entry, error) from None
        _check_hash(part, entry, delete=True)
    return final


def fetch_checkpoint(model_name):
    """Local path of the verified official checkpoint of `model_name` (downloads if needed)."""
    entry = pretrained_file(model_name)
    mirror = _mirror()
    if mirror is not None and mirror[0] == "dir":
        path = os.path.join(mirror[1], entry.filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{MIRROR_ENV}={os.environ[MIRROR_ENV]}: {entry.filename} is not in that "
                "directory (the mirror must hold the official file names)."
            )
        _check_hash(path, entry, delete=False)
        return path
    directory = cache_dir()
    cached = os.path.join(directory, entry.filename)
    if os.path.isfile(cached):
        try:
            _check_hash(cached, entry, delete=True)
            return cached
        except ValueError:
            pass  # a damaged cache entry: deleted, download again
    base_url = mirror[1] if mirror is not None else entry.base_url
    return _download(entry, directory, base_url, model_name)


# --------------------------------------------------------------------------------------------
# Conversion and loading


def _converted_path(entry):
    return os.path.join(cache_dir(), entry.converted_filename)


def _classifier_head(model):
    """The "fc" layer, or None for a model without one (include_top=False)."""
    try:
        return model.get_layer("fc")
    except ValueError:
        return None


def _is_imagenet_classifier(model):
    return getattr(_classifier_head(model), "units", None) == IMAGENET_CLASSES


def convert_to_keras(model, checkpoint, output):
    """Converts a checkpoint to a Keras `.weights.h5` file, atomically.

    Args:
        model: keras.Model. The model of the checkpoint's architecture (with its ImageNet head)
            that the checkpoint is loaded into and saved from; the caller builds it, so this
            package does not depend on the model builder.
        checkpoint: path-like. A `.pth`/`.pt`, `.safetensors` or `.npz` state dict.
        output: path-like. The `.weights.h5` file to write.

    Returns:
        The `PortReport` of the conversion.
    """
    from keras_resnest.porting import load_torch_state_dict
    from keras_resnest.weights.checkpoints import read_state_dict

    output = os.fspath(output)
    if not output.endswith(CONVERTED_SUFFIX):
        raise ValueError(f"{output}: the output name must end with {CONVERTED_SUFFIX} (Keras)")
    state = read_state_dict(checkpoint, lazy=True)
    report = load_torch_state_dict(model, state, strict=True)
    del state
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    # Written under a temporary name and renamed: the output is complete or absent.
    partial = f"{output[:-len(CONVERTED_SUFFIX)]}.{os.getpid()}.partial{CONVERTED_SUFFIX}"
    with renamed_on_success(partial, output):
        model.save_weights(partial)
    return report


def imagenet_weights_file(model_name, build_model=None):
    """Path of the cached converted ImageNet weights (full model, 1000 classes).

    Args:
        model_name: str. A canonical model name.
        build_model: callable returning an ImageNet-head model of `model_name`, called only
            when the weights are not converted yet (the checkpoint is converted into it).
            Defaults to None: the converted file must then be in the cache.
    """
    entry = pretrained_file(model_name)
    converted = _converted_path(entry)
    if not os.path.isfile(converted):
        checkpoint = fetch_checkpoint(model_name)
        if build_model is None:
            raise ValueError(f"{model_name}: the ImageNet weights are not converted yet; "
                             "expected a build_model to convert them into, got None")
        convert_to_keras(build_model(), checkpoint, converted)
    return converted


def load_keras_weights(model, path):
    """`model.load_weights(path)`; a head of another size keeps its initialisation.

    Keras matches the layers of a `.weights.h5`/`.keras` file to the model's by order within
    each layer type, which holds for every variant of one architecture (without the head,
    without preprocessing, another output stride or input size). Only a head of another class
    count differs, and it is skipped.
    """
    head = _classifier_head(model)
    skip_head = head is not None and getattr(head, "units", None) != IMAGENET_CLASSES
    if not skip_head:
        model.load_weights(path)
        return
    with warnings.catch_warnings():
        # Keras warns about the one object it skips: the head, on purpose.
        warnings.filterwarnings("ignore", message=r"(?s).*could not be loaded")
        warnings.filterwarnings("ignore", message=r"(?s).*Skipping nested container")
        warnings.filterwarnings("ignore", message=r"(?s).*__array__ implementation")
        model.load_weights(path, skip_mismatch=True)


def load_imagenet_weights(model, model_name, build_imagenet_model=None):
    """Loads the official ImageNet weights into `model` (any variant of `model_name`).

    Args:
        model: keras.Model. A variant of `model_name`.
        model_name: str. Its canonical name.
        build_imagenet_model: callable returning a new ImageNet-head model of `model_name`, to
            convert the checkpoint into when `model` has another head (or none). Defaults to
            None (`model` must then be an ImageNet classifier, or the weights converted).
    """
    entry = pretrained_file(model_name)
    converted = _converted_path(entry)
    if not os.path.isfile(converted) and _is_imagenet_classifier(model):
        # Convert straight into the model: no second model is built.
        imagenet_weights_file(model_name, build_model=lambda: model)
        return
    path = imagenet_weights_file(model_name, build_imagenet_model)
    try:
        load_keras_weights(model, path)
    except (OSError, ValueError, KeyError):
        # A damaged cache entry (e.g. a disk filled while writing): convert again, once.
        with contextlib.suppress(FileNotFoundError):
            os.remove(converted)
        load_keras_weights(model, imagenet_weights_file(model_name, build_imagenet_model))
