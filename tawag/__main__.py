import sys

from tawag.cli import main

sys.exit(main())
