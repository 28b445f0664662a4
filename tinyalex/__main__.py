import sys

try:
    from .cli import main
    status = main()
except KeyboardInterrupt:   # Ctrl-C while NumPy and Numba load
    print("interrupted", file=sys.stderr)
    status = 130
raise SystemExit(status)
