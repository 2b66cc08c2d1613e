import sys

from eval_pipeline.cli import main

sys.exit(main())
