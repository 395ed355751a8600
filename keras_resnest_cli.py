"""The `keras-resnest` console command.

It lives outside the `keras_resnest` package because `import keras_resnest` imports Keras
(registering the package's classes): with this module imported first, the package defers that
until the arguments parse, so `keras-resnest --help` answers at once and TensorFlow's start-up
lines can be hidden (`keras_resnest.quiet_start`) before TensorFlow loads.

    python -m keras_resnest_cli --help
    python -c "import keras_resnest_cli; keras_resnest_cli.demo()"   # `make demo`
"""
import sys


def main(argv=None):
    from keras_resnest.commands.main import main as run_command

    return run_command(argv)


def demo(argv=None):
    """`keras_resnest.commands.demo` started like the command: TensorFlow's start-up lines
    hidden."""
    from keras_resnest.commands.demo import main as run_demo

    return run_demo(argv)


if __name__ == "__main__":
    # Run as `python -m keras_resnest_cli`, this file is `__main__`; importing it under its own
    # name is what tells the package to defer Keras.
    from keras_resnest_cli import main as _main

    sys.exit(_main())
