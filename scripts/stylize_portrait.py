"""Stylize a fitted portrait: `python scripts/stylize_portrait.py RUN --style painting.png` (see --help).

A thin entry point: the same as `canon-edit stylize`, whose library function is
`canon_edit.edit.commands.edit_stylize` (and `edit_diffusion` for --instruction). The result is an
edit in RUN/edits/NAME/.
"""

import sys

from canon_edit.cli import main

if __name__ == "__main__":
    sys.exit(main(["stylize", *sys.argv[1:]]))
