"""The node image's service scripts (images/node.yaml), run by the host's sh.

``supervise`` restarts a service that dies; the health check's ``listening``
reads /proc/net/tcp{,6} as the guest's does. (The boot itself is e2e.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def script(path: str) -> str:
    files = yaml.safe_load((REPO / "images/node.yaml").read_text())["files"]
    entry = files[path]
    return str(entry["content"] if isinstance(entry, dict) else entry)


def test_supervise_restarts_a_service_that_dies(tmp_path: Path) -> None:
    sv = tmp_path / "supervise"
    sv.write_text(script("/usr/lib/distbuild/supervise"))
    sv.chmod(0o755)
    count = tmp_path / "starts"
    service = f"echo started >> {count}; echo 'service output'; exit 3"
    env = {**os.environ, "SUPERVISE_LOG_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [str(sv), "demo", "sh", "-c", service],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if count.exists() and len(count.read_text().splitlines()) >= 2:
                break
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
    assert len(count.read_text().splitlines()) >= 2, "not restarted"
    assert "distbuild-os: demo exited (3); restarting in 1s" in out
    assert "service output" in (tmp_path / "demo.log").read_text()  # not on the console
    assert "service output" not in out


def listening(port: int) -> bool:
    health = script("/usr/lib/distbuild/health-check")
    (line,) = [x for x in health.splitlines() if x.startswith("listening()")]
    rc = subprocess.run(["sh", "-c", f"{line}\nlistening {port}"], check=False, timeout=10)
    return rc.returncode == 0


def test_the_health_check_sees_a_listening_port() -> None:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
            assert not listening(port)
            s.listen()
            assert listening(port)
