"""`PresetNames`: keras-hub's `from_preset` that also takes the names in `PRESETS` and timm's
repositories on the Hugging Face Hub (`keras_resnest.hub.timm_repos`)."""
from keras_resnest.hub.presets import resolve_preset
from keras_resnest.hub.timm_repos import from_timm_repo, timm_repo


class PresetNames:
    """Mixin, listed before the keras-hub base class, of every keras_resnest hub class."""

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """keras-hub's `from_preset`; `preset` may also be a name in `keras_resnest.hub.PRESETS`
        (its preset directory is written on first use) or a timm repository
        `"hf://timm/resnest50d.in1k"` (pinned with `@<revision>`)."""
        timm = timm_repo(preset)
        if timm is not None:
            return from_timm_repo(cls, preset, *timm, **kwargs)
        return super().from_preset(resolve_preset(preset), **kwargs)
