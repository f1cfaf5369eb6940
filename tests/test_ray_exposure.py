"""The Ray that ``fold-proteome`` starts is reachable from this machine only: every server of it listens on the
loopback address, and no dashboard (whose jobs API runs code for whoever reaches it) is started unless asked for."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

LISTENERS = """
import json, os, sys, psutil
import_ray_first, dashboard = sys.argv[1] == "1", sys.argv[2] == "1"
if import_ray_first:  # a process that imported Ray before fold_proteome set its switch
    import ray
from esmfold_lite.pipeline import ray_workers
os.environ.update(ray_workers.LOCAL_ONLY_ENV)  # what fold_proteome does before importing Ray
import ray
ray_workers.connect(ray, None, dashboard)
me = psutil.Process()
listening = []
for process in [me, *me.children(recursive=True)]:
    try:
        for c in process.net_connections(kind="inet"):
            if c.status == psutil.CONN_LISTEN:
                listening.append([process.name(), c.laddr.ip, c.laddr.port])
    except psutil.Error:
        pass
ray.shutdown()
print(json.dumps(listening))
"""


@pytest.mark.parametrize("import_ray_first", [False, True])
def test_local_ray_listens_on_loopback_only_without_dashboard(import_ray_first):
    done = subprocess.run(
        [sys.executable, "-c", LISTENERS, str(int(import_ray_first)), "0"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    listening = json.loads(done.stdout.strip().splitlines()[-1])
    assert listening, "Ray's servers were not found"
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for _, ip, _ in listening), listening
    assert 8265 not in {port for _, _, port in listening}, "the dashboard is serving"
