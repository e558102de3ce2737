import sys

from editcore.cli import main

sys.exit(main())
