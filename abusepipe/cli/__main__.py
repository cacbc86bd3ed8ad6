"""`python -m abusepipe.cli`, as the tests and benchmarks run the command."""

import sys

from abusepipe.cli import main

sys.exit(main())
