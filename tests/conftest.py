"""Test-wide settings: TensorFlow logs kept quiet."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
