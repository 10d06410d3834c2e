"""`python -m attn_tools.run`: see attn_tools.run.cli."""
import signal
import sys

from .cli import main

# A script's background job starts with SIGINT ignored, and Python then leaves it ignored; the
# runner takes SIGINT (Ctrl-C, `timeout -s INT` at a deadline) as "stop and merge" wherever it runs.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(main())
