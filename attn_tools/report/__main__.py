"""`python -m attn_tools.report`: see attn_tools.report.cli."""
import sys

from .cli import main

sys.exit(main())
