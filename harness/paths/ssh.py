"""SSH `-L` local forward through a private sshd on loopback, both started by the harness.

Per measurement, in the workdir: a fresh ed25519 host key and client key,
an authorized_keys file holding the client key, a known_hosts file holding
the host key (strict checking stays on), and an sshd_config that listens on
127.0.0.1 only, allows public-key login and local forwarding to the target
only. Then `sshd -D -e -f <workdir>/sshd_config` (sshd insists on an
absolute path) and `ssh -N -L 127.0.0.1:P:127.0.0.1:T` against it. No system
sshd config, key or service is read or changed; the one system fact sshd
needs is its privilege-separation directory /run/sshd (root-owned, created
if missing, as the openssh-server package's tmpfiles rule would).

Ciphers, MACs and key exchange are OpenSSH's defaults (what users get).
Forwarder CPU = the ssh client plus the sshd tree (listener, per-connection
monitor and session processes).
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from pathlib import Path

from harness.errors import PathError
from harness.netutil import LOOPBACK
from harness.paths._peer import PeerPath
from harness.paths._proc_path import READY_TIMEOUT_S, wait_process_accepts
from harness.paths.base import Availability, PathSetup

PRIVSEP_DIR = Path("/run/sshd")
KEYGEN_TIMEOUT_S = 30.0


def render_sshd_config(workdir: Path, port: int, target_port: int, user: str) -> str:
    """sshd_config of the private sshd: loopback, key login for `user`, forwarding to the target only."""
    return "\n".join([
        f"ListenAddress {LOOPBACK}:{port}",
        f"HostKey {workdir / 'host_key'}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
        f"AllowUsers {user}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        # The workdir lives under a world-writable /tmp, which StrictModes refuses.
        "StrictModes no",
        "AllowTcpForwarding local",
        f"PermitOpen {LOOPBACK}:{target_port}",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "PermitTTY no",
        "PrintMotd no",
        "UseDNS no",
        "LogLevel ERROR",
        "",
    ])


def ssh_argv(ssh: str, workdir: Path, sshd_port: int, listen_port: int, target_port: int, user: str) -> list[str]:
    """The `ssh -N -L` command: no user or system ssh config, only the files in workdir."""
    return [ssh, "-N", "-F", "/dev/null", "-i", str(workdir / "client_key"), "-p", str(sshd_port),
            "-o", f"UserKnownHostsFile={workdir / 'known_hosts'}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR",
            "-L", f"{LOOPBACK}:{listen_port}:{LOOPBACK}:{target_port}", f"{user}@{LOOPBACK}"]


def _keygen(keygen: str, path: Path) -> str:
    """A fresh ed25519 key pair at path / path.pub; returns the public key line."""
    for f in (path, path.with_suffix(".pub")):
        f.unlink(missing_ok=True)  # ssh-keygen would ask before overwriting
    proc = subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "portunus-bench", "-f", str(path)],
                          capture_output=True, text=True, timeout=KEYGEN_TIMEOUT_S)
    if proc.returncode != 0:
        raise PathError(f"ssh-keygen failed: {proc.stderr.strip()}")
    return path.with_suffix(".pub").read_text().strip()


class SshPath(PeerPath):
    name = "ssh"
    description = "ssh -L local forward through a private sshd on loopback (OpenSSH default ciphers)"
    tool = "ssh"
    package = "openssh-client openssh-server"
    ports_needed = 2  # the sshd port and the forward's listen port

    def __init__(self) -> None:
        super().__init__()
        self._sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").is_file() else None)
        self._keygen = shutil.which("ssh-keygen")

    def available(self) -> Availability:
        if self._binary is None or self._sshd is None or self._keygen is None:
            return Availability.no("ssh, sshd or ssh-keygen is not installed: apt-get install openssh-client "
                                   "openssh-server (or make setup)")
        if os.geteuid() != 0:
            return Availability.no("the private sshd needs root (privilege separation in /run/sshd): "
                                   "run portunus-bench as root, or leave the ssh path out")
        return Availability.yes()

    def launch(self, setup: PathSetup, listen_port: int) -> subprocess.Popen:
        assert self._binary is not None and self._sshd is not None and self._keygen is not None
        workdir = setup.workdir.resolve()
        user = getpass.getuser()
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        host_pub = _keygen(self._keygen, workdir / "host_key")
        (workdir / "authorized_keys").write_text(_keygen(self._keygen, workdir / "client_key") + "\n")
        sshd_port = setup.alloc_port()
        (workdir / "known_hosts").write_text(f"[{LOOPBACK}]:{sshd_port} {host_pub}\n")
        cfg = workdir / "sshd_config"
        cfg.write_text(render_sshd_config(workdir, sshd_port, setup.target_port, user))
        sshd_log = workdir / "sshd.log"
        sshd = self.spawn([str(Path(self._sshd).resolve()), "-D", "-e", "-f", str(cfg)], log_path=sshd_log)
        wait_process_accepts(sshd, sshd_port, READY_TIMEOUT_S, "sshd", sshd_log)
        argv = ssh_argv(self._binary, workdir, sshd_port, listen_port, setup.target_port, user)
        # ssh listens on the forward's port only after authentication: LISTEN means the tunnel is up.
        ssh = self.spawn(argv)
        self._info = {"sshd": self._sshd, "sshd_port": sshd_port, "argv": " ".join(argv)}
        return ssh
