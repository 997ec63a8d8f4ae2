import sys

from clipbd import numerics

numerics.pin_process(sys.argv[1:])  # before anything imports torch (clipbd.numerics)

from clipbd.cli import main  # noqa: E402

raise SystemExit(main())
