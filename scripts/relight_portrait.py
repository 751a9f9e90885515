"""Relight a fitted portrait: `python scripts/relight_portrait.py RUN --preset key-left` (see --help).

A thin entry point: the same as `canon-edit relight`, whose library function is
`canon_edit.edit.commands.edit_relight`. The result is an edit in RUN/edits/NAME/.
"""

import sys

from canon_edit.cli import main

if __name__ == "__main__":
    sys.exit(main(["relight", *sys.argv[1:]]))
