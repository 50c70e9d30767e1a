"""The benchmarks' load gate: CPU that our own children use is ours, not a neighbour's."""

import os
import subprocess
import sys
import time

import pytest

from benchmarks.native import _busy_jiffies, _own_jiffies

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_a_busy_child_counts_as_our_own_cpu():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
    try:
        time.sleep(0.2)  # the child has started
        own0 = _own_jiffies()
        time.sleep(1.0)
        own = _own_jiffies() - own0
    finally:
        busy.wait()
    # the child spun for that second: at least a third of a CPU-second of it, even on a busy
    # machine, is counted as ours (before, nothing of a live child was)
    assert own >= os.sysconf("SC_CLK_TCK") / 3, own
    busy, total = _busy_jiffies()
    assert 0 < busy <= total
