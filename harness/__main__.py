import sys

from harness.cli.main import console_main

sys.exit(console_main())
