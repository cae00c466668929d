"""Test-only: run ``mill ARGV`` as another user, as a colleague on a shared cluster would.

    python run_as.py UID GID UMASK ARGV...

Started as root, it imports Mill, its clip backend and their libraries first, then drops to ``UID``
(primary and only group ``GID``) with ``UMASK`` and runs the command in this process. Importing first
lets the test run where the interpreter itself lives in a folder only root may read (``/root/.pyenv``);
everything the command writes is written as the other user. Exits with the command's status.
"""

from __future__ import annotations

# Besides os and sys: what `mill eval` of a clip model imports lazily, imported while still root.
import importlib.readers  # noqa: F401
import os
import sys

import open_clip  # noqa: F401
import PIL.Image
import PIL.WebPImagePlugin
import polars  # noqa: F401
import torch  # noqa: F401
import torchvision  # noqa: F401

import mill.backends.clip.backend
import mill.backends.clip.plugin
import mill.data.loader  # noqa: F401
from mill.cli.main import main

uid, gid, umask = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3], 8)
PIL.Image.init()
os.setgroups([gid])
os.setgid(gid)
os.setuid(uid)
os.umask(umask)
if os.getuid() != uid or os.getgid() != gid or os.getgroups() != [gid]:
    sys.exit(f"run_as.py: could not become uid {uid}, gid {gid}")
main(sys.argv[4:])
