"""`python -m certexplorer [streamlit run options]`: the same as the `certexplorer` command."""
from certexplorer.launcher import main

main()
