import sys

from wirewise.cli import main

sys.exit(main())
