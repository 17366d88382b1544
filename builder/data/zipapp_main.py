# kubecrate-installer: start isolated, then check and run the bundled code (_kubecrate_boot).
import os
import sys

if sys.version_info < (3, 6):  # noqa: UP036 (python2 X.pyz: say so, not a traceback)
    sys.exit("kubecrate-installer needs Python 3.6 or later: run it as ./kubecrate-installer.pyz")
if not sys.flags.isolated and sys.executable:
    # `python3 X.pyz` honours PYTHONPATH, PYTHONHOME, PYTHONINSPECT and the user site, which
    # could put other code in front of the installer's: start again with -I, before importing
    # anything else.
    os.execv(sys.executable, [sys.executable, "-I"] + (["-S"] if sys.flags.no_site else [])
             + sys.argv)

import _kubecrate_boot  # noqa: E402

_kubecrate_boot.main()
