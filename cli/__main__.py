"""`python -m cli ...` (the console script `imgclf` calls the same main)."""

import sys

from cli.main import main

sys.exit(main())
