"""`python -m certlib run | table | export`: see certlib/cli.py. (`python -m certlib.models` and
`python -m certlib.train_digits` are separate entry points.)"""
import sys

from certlib.cli import main

sys.exit(main())
