"""Child process for the "python" iperf3 backend: `python -m harness.measure.iperf_child PARAMS_JSON OUT_FILE`.

Runs one test through the PyPI `iperf3` wrapper (libiperf in-process) and
writes libiperf's JSON report, verbatim, to OUT_FILE. Kept apart from the
harness so a hang or crash inside libiperf only costs this process.
"""

from __future__ import annotations

import fcntl
import json
import sys
from pathlib import Path

# The wrapper swallows libiperf's stdout through an os.pipe() while the test
# runs and reads it only afterwards; a default 64 KiB pipe fills on long runs
# (about 1 KiB of JSON per interval and stream) and libiperf then blocks in
# write() forever. 1 MiB is Linux's default /proc/sys/fs/pipe-max-size.
_F_SETPIPE_SZ = 1031
_WRAPPER_PIPE_BYTES = 1 << 20


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m harness.measure.iperf_child PARAMS_JSON OUT_FILE", file=sys.stderr)
        return 2
    params = json.loads(argv[1])
    out = Path(argv[2])
    import iperf3  # imported here: loading libiperf is this process's job only

    client = iperf3.Client()
    client.server_hostname = params["host"]
    client.port = int(params["port"])
    client.duration = int(params["seconds"])
    client.omit = int(params["omit_seconds"])
    client.protocol = params["protocol"]
    client.num_streams = int(params["streams"])
    if params.get("offered_mbps") is not None:
        client.bandwidth = int(round(float(params["offered_mbps"]) * 1e6))
    if params.get("length_bytes") is not None:
        client.blksize = int(params["length_bytes"])
    client.json_output = True
    try:
        fcntl.fcntl(client._pipe_in, _F_SETPIPE_SZ, _WRAPPER_PIPE_BYTES)
    except (OSError, AttributeError):
        pass  # a smaller pipe still works for short runs
    result = client.run()
    out.write_text(result.text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
