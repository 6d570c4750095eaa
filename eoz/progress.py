"""Progress bars on stderr for the command line's long runs (a Sentinel-2 tile takes minutes).

The library reports progress through one callback, (done, total) (eoz.scene.Progress); a
bar here turns those calls into a tqdm bar. It shows only on a terminal: piped or
redirected stderr (logs, CI, tests) stays clean, and ``--quiet`` turns it off.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

from eoz.scene import Progress


@contextmanager
def bar(description: str, unit: str = "tile", quiet: bool = False) -> Iterator[Progress]:
    """A (done, total) callback drawing a bar on stderr while the block runs; the bar stays,
    complete, with the time it took."""
    # disable=None: tqdm draws only when stderr is a terminal
    with tqdm(desc=description, unit=unit, file=sys.stderr, disable=True if quiet else None, dynamic_ncols=True,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit}s [{elapsed}<{remaining}]"
              ) as shown:
        def update(done: int, total: int) -> None:
            shown.total = total
            shown.update(done - shown.n)

        yield update
