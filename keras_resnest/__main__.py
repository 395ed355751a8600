"""`python -m keras_resnest ...`: the same command line as `keras-resnest ...`, as quiet."""
import sys

from keras_resnest_cli import main

sys.exit(main())
