"""`python -m certlib run | table | export`: see certlib/runs/cli.py. (`python -m certlib.models.registry` and
`python -m certlib.models.train_digits` are separate entry points.)"""
import sys

from certlib.runs.cli import main

sys.exit(main())
