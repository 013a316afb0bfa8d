"""A private sshd for labs and tests: a "remote host" the SSH executor can drive, on this machine.

`open_lab_sshd(ex, workdir, listen_host, port)` starts `sshd -D` through
executor ex (typically inside a network namespace, so the "host" has its own
addresses), with everything it needs in workdir: a fresh ed25519 host key
and client key, an authorized_keys file holding the client key, a
known_hosts file holding the host key (strict checking stays on), and an
sshd_config that allows key login for the current user only and local port
forwards (the SSH executor's connect()). No system sshd config, key or
service is read or changed (as harness.paths.ssh does for the ssh peer).
The returned LabSshd turns into an SshSpec for the executor.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.define.topology import SshSpec
from harness.errors import HarnessError
from harness.site import procs
from harness.site.executor.base import Executor, Proc, log_tail_of

# sshd's privilege-separation directory (root-owned; the openssh-server package's tmpfiles rule makes it).
PRIVSEP_DIR = "/run/sshd"
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class LabSshd:
    host: str
    port: int
    user: str
    identity_file: Path
    known_hosts: Path
    proc: Proc

    def spec(self, **kw: object) -> SshSpec:
        """An SshSpec for this sshd (kw: python, extra_path, connect_netns, ...)."""
        fields: dict[str, object] = {"host": self.host, "port": self.port, "user": self.user,
                                     "identity_file": str(self.identity_file), "known_hosts": str(self.known_hosts)}
        return SshSpec(**{**fields, **kw})  # type: ignore[arg-type]


@contextmanager
def open_lab_sshd(ex: Executor, workdir: Path, listen_host: str, port: int) -> Iterator[LabSshd]:
    """sshd on listen_host:port through ex, serving key logins for the current user; stopped on exit."""
    from harness.paths.ssh import keygen, render_sshd_config  # the ssh peer's helpers, shared

    sshd, keygen_bin = ex.which("sshd"), ex.which("ssh-keygen")
    if sshd is None or keygen_bin is None:
        raise HarnessError("sshd / ssh-keygen not found: apt-get install openssh-server openssh-client")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    user = getpass.getuser()
    ex.run(["mkdir", "-p", "-m", "0755", PRIVSEP_DIR])
    host_pub = keygen(keygen_bin, workdir / "host_key", ex)
    ex.write_text(workdir / "authorized_keys", keygen(keygen_bin, workdir / "client_key", ex) + "\n")
    known = f"[{listen_host}]:{port}" if port != 22 else listen_host
    ex.write_text(workdir / "known_hosts", f"{known} {host_pub}\n")
    cfg = workdir / "sshd_config"
    ex.write_text(cfg, render_sshd_config(workdir, port, None, user, listen_host=listen_host))
    log = workdir / "sshd.log"
    proc = ex.spawn([sshd, "-D", "-e", "-f", str(cfg)], log_path=log)
    try:
        try:
            ex.wait_listening(port, proc, READY_TIMEOUT_S)
        except TimeoutError as e:
            raise HarnessError(f"lab sshd on {listen_host}:{port} did not start: {e}\n{log_tail_of(ex, log)}") from None
        yield LabSshd(listen_host, port, user, workdir / "client_key", workdir / "known_hosts", proc)
    finally:
        # sshd's per-session processes leave its process group (setsid): end them too.
        stray = ex.descendants(proc.pid)
        procs.stop(proc)
        ex.stop_pids(stray)
