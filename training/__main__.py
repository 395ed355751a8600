"""`python -m keras_resnest.training ...`: the same as `keras-resnest train ...`."""
import sys

from keras_resnest.training.cli import main

sys.exit(main())
