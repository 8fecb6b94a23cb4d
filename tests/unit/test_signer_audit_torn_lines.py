"""`portico.signer.audit.AuditLog` on a file that fills up part-way through a line: the kernel's own partial write.

A process's file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored) makes `write(2)` write up to the limit and then
fail with EFBIG, as a disk that fills mid-line does with ENOSPC; it is set in a child process, so the test's own
files are not limited.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, logging, resource, signal, sys
from pathlib import Path
from portico.runtime.errors import Unavailable
from portico.runtime.logs import JsonFormatter
from portico.signer.audit import AuditLog

handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(JsonFormatter("signer"))
logging.getLogger().handlers[:] = [handler]
logging.getLogger().setLevel(logging.INFO)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal's default, death
path = Path(sys.argv[1])
audit = AuditLog(path)
audit.open()

def fields(i):
    return {"key_id": f"k{i}", "caller": "test", "primary_type": "Order", "digest": "0x" + "ab" * 32,
            "address": "0x" + "12" * 20, "salt": str(i)}

outcomes = []
def sign(i):
    try:
        audit.signed(fields(i))
        outcomes.append("signed")
    except Unavailable as exc:
        outcomes.append(exc.reason)

sign(0)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
size = path.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + size // 2, hard))  # the next line fits half-way
for i in range(1, 5):
    sign(i)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
sign(5)
sign(6)
audit.close()
print(json.dumps(outcomes))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE's partial write is Linux's")
def test_a_line_torn_by_a_full_file_is_refused_and_ended_and_the_next_lines_are_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["signed", *["AUDIT_UNAVAILABLE"] * 4, "signed", "signed"]

    first, torn, *rest = path.read_text().splitlines()
    assert json.loads(first)["key_id"] == "k0"
    with pytest.raises(json.JSONDecodeError):  # half of k1's line, on a line of its own
        json.loads(torn)
    assert torn.startswith('{"ts":') and '"key_id":"k1"' in torn
    assert [json.loads(line)["key_id"] for line in rest] == ["k5", "k6"]  # whole, and nothing withheld was written

    logged = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["msg"] for line in logged if line["logger"] == "portico.signer.audit"] == ["signed"] * 3
    [warning] = [line for line in logged if line["level"] == "WARNING"]  # once for the outage, not four times
    assert (warning["msg"], warning["error"], warning["path"]) == (
        "audit log cannot be written; refusing to return signatures", "EFBIG", str(path))
    [recovered] = [line for line in logged if line["msg"] == "audit log writable again; signing"]
    assert recovered["withheld"] == 4
