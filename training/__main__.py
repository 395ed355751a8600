"""`python -m keras_resnest.training ...`: the same as `keras-resnest train ...`, as quiet."""
import sys

from keras_resnest_cli import main

sys.exit(main(["train", *sys.argv[1:]]))
