"""`weights="hf://<owner>/<name>[@<revision>]"`: timm's checkpoints on the Hugging Face Hub.

timm publishes eight of the models as a `config.json` (whose "architecture" names the model)
and a `model.safetensors` with the official state-dict names (`HUB_REPOS`). Both files are
fetched with `huggingface_hub.hf_hub_download`, so its cache (`HF_HOME` / `HF_HUB_CACHE`), its
endpoint (`HF_ENDPOINT`), its token (`HF_TOKEN` or `hf auth login`) and its offline mode
(`HF_HUB_OFFLINE=1`, or a Hub that cannot be reached: the cached files are used) apply. The
checkpoint is converted on load by the same torch-free reader as `weights=<file>`, with the same
head rules.

`@<revision>` pins a branch, tag or commit (`hf://timm/resnest50d.in1k@main`).

Every failure (a malformed name, a repository, revision or file that does not exist, another
architecture) is one `HubWeightsError` line; `check_repo_model` finds most of them from
`config.json` alone, before a model is built.

Example:
    >>> parse_spec("hf://timm/resnest50d.in1k@v1")
    HubSpec(repo_id='timm/resnest50d.in1k', revision='v1')
    >>> HUB_REPOS["resnest50"]
    'timm/resnest50d.in1k'
"""
import json
import re
from dataclasses import dataclass

from keras_resnest.models.configs import ALIASES, MODEL_CONFIGS, resolve_model_name

HF_PREFIX = "hf://"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
DEFAULT_REVISION = "main"
# Hub repository names: letters, digits, "-", "_" and "." (huggingface_hub checks the rest).
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")

# keras_resnest model -> timm's repository of its ImageNet weights (hf_hub_id "timm/" in timm's
# resnest.py), from the registry's rows. Five of the fast variants are not on the Hub.
HUB_REPOS = {name: config.hub_repo for name, config in MODEL_CONFIGS.items() if config.hub_repo}


class HubWeightsError(ValueError):
    """A `hf://` repository that cannot give the weights asked for (one line, no traceback of
    huggingface_hub)."""


@dataclass(frozen=True)
class HubSpec:
    repo_id: str
    revision: str = DEFAULT_REVISION

    def __str__(self):
        suffix = "" if self.revision == DEFAULT_REVISION else f"@{self.revision}"
        return f"{HF_PREFIX}{self.repo_id}{suffix}"


def is_hub_spec(weights):
    """True for a `weights=` value that names a Hub repository (`"hf://..."`)."""
    return isinstance(weights, str) and weights.startswith(HF_PREFIX)


def hub_spec_of(model_name):
    """`"hf://<repo>"` of a canonical model's timm repository, or None when it is not on the Hub."""
    repo = HUB_REPOS.get(model_name)
    return f"{HF_PREFIX}{repo}" if repo else None


def parse_spec(spec):
    """`"hf://<owner>/<name>[@<revision>]"` -> `HubSpec`.

    Args:
        spec (str): The `weights=` value.

    Raises:
        HubWeightsError: for anything but an owner, a name and an optional revision.
    """
    body = spec[len(HF_PREFIX):] if is_hub_spec(spec) else ""
    repo_id, at, revision = body.partition("@")
    if not is_hub_spec(spec) or not _REPO_ID.fullmatch(repo_id) or (at and not revision):
        raise HubWeightsError(
            "a Hugging Face Hub repository is written hf://<owner>/<name>[@<revision>], e.g. "
            f"'hf://timm/resnest50d.in1k' or 'hf://timm/resnest50d.in1k@main'; got {spec!r}")
    return HubSpec(repo_id, revision or DEFAULT_REVISION)


def _endpoint():
    from huggingface_hub import constants

    return constants.ENDPOINT


def download(spec, filename):
    """Local path of `filename` of the repository (downloaded into the Hugging Face cache).

    Args:
        spec (HubSpec): The repository and revision.
        filename (str): The file in the repository.

    Raises:
        HubWeightsError: the repository, revision or file does not exist (or is private without
            a token), or the Hub cannot be reached and the file is not cached.
    """
    import huggingface_hub
    from huggingface_hub.utils import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return huggingface_hub.hf_hub_download(spec.repo_id, filename, revision=spec.revision)
    # The subclasses first: LocalEntryNotFoundError is an EntryNotFoundError, and the errors of
    # a missing repository, revision or remote file are HfHubHTTPErrors.
    except LocalEntryNotFoundError as error:
        cause = error.__cause__ or error
        reason = " ".join(f"{type(cause).__name__}: {cause}".split())
        message = (f"cannot reach the Hub at {_endpoint()} and {filename} of this revision is "
                   "not in the Hugging Face cache; expected a connection (HF_ENDPOINT) or an "
                   f"earlier download; got {reason}")
    except RevisionNotFoundError:
        message = (f"revision not found in {spec.repo_id}; expected a branch, tag or commit of "
                   f"that repository; got {spec.revision!r}")
    except RepositoryNotFoundError:
        message = (f"repository not found on {_endpoint()} (a private or gated one needs "
                   "HF_TOKEN or `hf auth login`); expected an existing model repository; got "
                   f"{spec.repo_id!r}")
    except EntryNotFoundError:
        message = (f"{filename} not found at revision {spec.revision!r}; expected timm's layout, "
                   f"{CONFIG_FILE} and {WEIGHTS_FILE}; got a repository without {filename}")
    except HFValidationError:
        message = f"not a valid repository id; expected <owner>/<name>; got {spec.repo_id!r}"
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        message = (f"the Hub refused {filename} (HTTP {status}); expected it to be readable "
                   f"with the current token; got {' '.join(str(error).split())[:200]}")
    raise HubWeightsError(f"{spec}: {message}") from None


def read_config(spec):
    """The repository's `config.json` as a dict (downloaded into the Hugging Face cache).

    Args:
        spec (HubSpec): The repository and revision.
    """
    path = download(spec, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
    except (OSError, ValueError) as error:
        raise HubWeightsError(f"{spec}: {CONFIG_FILE} is not readable JSON; expected timm's "
                              f"model config; got {type(error).__name__}: {error}") from None
    if not isinstance(config, dict):
        raise HubWeightsError(f"{spec}: {CONFIG_FILE} is not a JSON object; expected timm's "
                              f"model config; got {type(config).__name__}")
    return config


def is_timm_config(config):
    """True for timm's layout: an "architecture" and no Keras serialization (keras-hub's
    `save_to_preset` writes "registered_name")."""
    return "architecture" in config and "registered_name" not in config


def model_name_of(spec, config):
    """The canonical keras_resnest model that `config`'s timm architecture names.

    Args:
        spec (HubSpec): The repository (named in errors).
        config (dict): Its `config.json`.

    Raises:
        HubWeightsError: no "architecture", or one that keras_resnest does not build.
    """
    if not is_timm_config(config):
        raise HubWeightsError(
            f"{spec}: {CONFIG_FILE} has no timm \"architecture\"; expected a timm repository "
            f"({CONFIG_FILE} + {WEIGHTS_FILE}); got the keys {sorted(config)[:8]}")
    architecture = config["architecture"]
    try:
        return resolve_model_name(architecture)
    except ValueError:
        raise HubWeightsError(
            f"{spec}: {CONFIG_FILE} names an architecture keras_resnest does not build; "
            f"expected one of {', '.join(sorted(MODEL_CONFIGS))} or timm's "
            f"{', '.join(sorted(ALIASES))}; got {architecture!r}") from None


def check_repo_model(weights, model_name):
    """Reads the repository's `config.json` and checks that it holds `model_name`, before the
    model is built.

    Args:
        weights (str): The `"hf://..."` value of `weights=`.
        model_name (str): The canonical name of the model being built.

    Returns:
        The `HubSpec` of `weights`.

    Raises:
        HubWeightsError: see `download` and `model_name_of`, and a repository of another model.
    """
    spec = parse_spec(weights)
    config = read_config(spec)
    found = model_name_of(spec, config)
    if found != model_name:
        right = hub_spec_of(model_name)
        hint = f" such as {right!r}" if right else f" ({model_name} is not on the Hub)"
        raise HubWeightsError(
            f"{spec}: the repository holds {config['architecture']} (keras_resnest's {found}) "
            f"but the model being built is {model_name}; expected a {model_name} "
            f"repository{hint}; got {config['architecture']!r}")
    return spec


def load_hub_weights(model, weights, model_name):
    """Loads the `model.safetensors` of a timm repository into `model`.

    With `include_top=False` or another `classes` the head is not loaded (the rules of
    `weights=<file>`).

    Args:
        model (keras.Model): A model built as `model_name`.
        weights (str): `"hf://<owner>/<name>[@<revision>]"`.
        model_name (str): The canonical name `model` was built as.

    Returns:
        The `PortReport` of the conversion.
    """
    from keras_resnest.porting import load_torch_state_dict
    from keras_resnest.weights.checkpoints import read_state_dict

    spec = check_repo_model(weights, model_name)
    path = download(spec, WEIGHTS_FILE)
    try:
        return load_torch_state_dict(model, read_state_dict(path, lazy=True), strict=True)
    except ValueError as error:  # a CheckpointError, or tensors that do not fit the model
        raise HubWeightsError(f"{spec}: {WEIGHTS_FILE} does not fit {model_name}: "
                              f"{' '.join(str(error).split())}") from None


__all__ = ["HF_PREFIX", "HUB_REPOS", "HubSpec", "HubWeightsError", "check_repo_model",
           "hub_spec_of", "is_hub_spec", "load_hub_weights", "parse_spec", "read_config"]
