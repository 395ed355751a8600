"""The command line: argument parsing and the `main` of every `keras-resnest` subcommand, and
the demo. Installed as `keras_resnest.commands`.

It is the top layer: it imports the core (`keras_resnest`), the feature areas (`export`,
`training`, `hub`, `beam`) and nothing imports it but the entry points (`keras_resnest_cli`,
`python -m keras_resnest`, `python -m keras_resnest.training`). It sits beside `export/` and
`training/` rather than inside `keras_resnest/`, so that each folder imports only the folders
below it.
"""
