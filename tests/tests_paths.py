from pathlib import Path
APP = str(Path(__file__).resolve().parent.parent / "app.py")
