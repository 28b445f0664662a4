from .startup import run   # Ctrl-C and SIGTERM wait while the libraries load

raise SystemExit(run("tinyalex.cli", "main"))
