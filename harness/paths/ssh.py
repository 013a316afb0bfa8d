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

On a forwarded topology both ssh and sshd run on the edge (sshd on the edge's
own 127.0.0.1): the forward listens on site.listen_host and sshd dials
site.target_host, so the pair is one forwarder box, like every other peer.
"""

from __future__ import annotations

import getpass
import os
import shutil
from pathlib import Path

from harness.errors import PathError
from harness.paths._peer import PeerPath
from harness.paths._proc_path import READY_TIMEOUT_S, wait_process_accepts
from harness.paths.base import Availability, PathSetup
from harness.site.executor.base import Executor, Proc
from harness.site.executor.local import LOCAL
from harness.site.netutil import LOOPBACK

PRIVSEP_DIR = Path("/run/sshd")
KEYGEN_TIMEOUT_S = 30.0


def render_sshd_config(workdir: Path, port: int, target_port: int | None, user: str,
                       listen_host: str = LOOPBACK, target_host: str = LOOPBACK) -> str:
    """sshd_config of a private sshd: key login for `user` only, local forwarding to the target only
    (target_port None: to anywhere, for the SSH executor's own port forwards)."""
    permit = "any" if target_port is None else f"{target_host}:{target_port}"
    return "\n".join([
        f"ListenAddress {listen_host}:{port}",
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
        f"PermitOpen {permit}",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "PermitTTY no",
        "PrintMotd no",
        "UseDNS no",
        "LogLevel ERROR",
        "",
    ])


def ssh_argv(ssh: str, workdir: Path, sshd_port: int, listen_port: int, target_port: int, user: str,
             listen_host: str = LOOPBACK, target_host: str = LOOPBACK) -> list[str]:
    """The `ssh -N -L` command: no user or system ssh config, only the files in workdir."""
    return [ssh, "-N", "-F", "/dev/null", "-i", str(workdir / "client_key"), "-p", str(sshd_port),
            "-o", f"UserKnownHostsFile={workdir / 'known_hosts'}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR",
            "-L", f"{listen_host}:{listen_port}:{target_host}:{target_port}", f"{user}@{LOOPBACK}"]


def keygen(keygen_bin: str, path: Path, ex: Executor = LOCAL) -> str:
    """A fresh ed25519 key pair at path / path.pub on ex's host; returns the public key line."""
    # ssh-keygen would ask before overwriting
    ex.run(["rm", "-f", "--", str(path), str(path.with_suffix(".pub"))])
    r = ex.run([keygen_bin, "-q", "-t", "ed25519", "-N", "", "-C", "portunus-bench", "-f", str(path)],
               timeout_s=KEYGEN_TIMEOUT_S)
    if not r.ok:
        raise PathError(f"ssh-keygen failed on {ex.name}: {r.why()}")
    return ex.read_text(path.with_suffix(".pub")).strip()


def remote_user(ex: Executor) -> str:
    """The user name commands run as on ex's host."""
    if ex.kind != "ssh":
        return getpass.getuser()
    r = ex.run(["id", "-un"])
    if not r.ok:
        raise PathError(f"cannot tell the user on {ex.name}: {r.why()}")
    return r.stdout.strip()


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

    def launch(self, setup: PathSetup, listen_port: int) -> Proc:
        assert self._binary is not None
        ex = self._edge
        if ex.kind == "ssh":
            self._sshd, self._keygen = ex.which("sshd"), ex.which("ssh-keygen")
        if self._sshd is None or self._keygen is None:
            raise PathError(f"sshd or ssh-keygen not found on {ex.name}: install openssh-server there")
        workdir = setup.workdir.resolve() if ex.kind != "ssh" else setup.workdir
        user = remote_user(ex)
        ex.run(["mkdir", "-p", "-m", "0755", str(PRIVSEP_DIR)])
        host_pub = keygen(self._keygen, workdir / "host_key", ex)
        ex.write_text(workdir / "authorized_keys", keygen(self._keygen, workdir / "client_key", ex) + "\n")
        sshd_port = setup.alloc_port()
        ex.write_text(workdir / "known_hosts", f"[{LOOPBACK}]:{sshd_port} {host_pub}\n")
        cfg = workdir / "sshd_config"
        ex.write_text(cfg, render_sshd_config(workdir, sshd_port, setup.target_port, user,
                                              target_host=setup.site.target_host))
        sshd_log = workdir / "sshd.log"
        sshd_bin = str(Path(self._sshd).resolve()) if ex.kind != "ssh" else self._sshd
        sshd = self.spawn([sshd_bin, "-D", "-e", "-f", str(cfg)], log_path=sshd_log)
        wait_process_accepts(sshd, sshd_port, READY_TIMEOUT_S, "sshd", sshd_log, ex)
        argv = ssh_argv(self._binary, workdir, sshd_port, listen_port, setup.target_port, user,
                        setup.site.listen_host, setup.site.target_host)
        # ssh listens on the forward's port only after authentication: LISTEN means the tunnel is up.
        ssh = self.spawn(argv)
        self._info = {"sshd": self._sshd, "sshd_port": sshd_port, "argv": " ".join(argv)}
        return ssh
