"""`python -m components.score`: only the entry point; the job and its DoFns live in importable modules."""

from components.score.job import main

raise SystemExit(main())
