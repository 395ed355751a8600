"""`PresetNames`: keras-hub's `from_preset` that also takes the names in `PRESETS`."""
from keras_resnest.hub.presets import resolve_preset


class PresetNames:
    """Mixin, listed before the keras-hub base class, of every keras_resnest hub class."""

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """keras-hub's `from_preset`; `preset` may also be a name in `keras_resnest.hub.PRESETS`
        (its preset directory is written on first use)."""
        return super().from_preset(resolve_preset(preset), **kwargs)
