import sys

from deepvis.cli import main

sys.exit(main())
