"""An emulated cluster on one machine: N compute nodes and a login node, each a host of
its own that shares nothing with the others but the network and the installed software.

    login        the host users log in to and start jobs from (mpiexec, srun-like scripts)
    node0 ..     the compute nodes

Every host is an emulated host of :mod:`parrbm.harness.network` (a network namespace on
the shaped switch) and, in addition:

- its own mount namespace, with a private ``/tmp``, ``/dev/shm`` and ``/run``: nothing
  passes between hosts through a temporary file, and the folders of a run that a host
  keeps are those of its own ``/tmp`` (a folder of the cluster's, :meth:`EmulatedCluster.tmp`,
  so that a test can look into it);
- its own host name (UTS namespace) and System V IPC namespace, so that MPI and UCX see
  separate machines and never share memory between them;
- the cluster's ``/etc/hosts`` (every host by name) and ssh client configuration;
- its own ``sshd`` (Debian's ``openssh-server``), listening on its address, taking the
  cluster's key: ``ssh node1`` works from any host, without a prompt, as on a cluster.

The rest of the file system (the project's environment, ``/usr``) is seen at the same path
on every host, as on a cluster whose nodes are installed alike. A job that needs a shared
file system fails here, as it would on a cluster that has none.

:meth:`EmulatedCluster.run` runs a command on a host as a user logged in there would (in its
namespaces, with the caller's environment). Deleting the cluster kills every process on
its hosts, deletes their namespaces (links and qdiscs go with them) and its folder; the
hosts of a launcher killed outright are removed by the next network set up, or by
``parrbm network cleanup``, which kills what still runs on them.

Needs root (namespaces, mounts, sshd), iproute2, util-linux (``unshare``, ``nsenter``)
and ``openssh-server``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from parrbm.harness.network import (
    FOLDER_PREFIX,
    EmulatedNetwork,
    LinkSpec,
    NetworkError,
    _pids_inside,
    sweep_stale_folders,
)
from parrbm.harness.network import missing as net_missing

SSHD = "/usr/sbin/sshd"
#: how long the hosts' sshd may take to listen
START_SECONDS = 20.0


def missing() -> str | None:
    """Why this process cannot build an emulated cluster, or None if it can."""
    why = net_missing()
    if why:
        return why
    if os.geteuid() != 0:
        return "the emulated cluster needs root (mount namespaces and each host's sshd)"
    for tool, package in (
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
    ):
        if shutil.which(tool) is None:
            return f"the emulated cluster needs '{tool}' (apt-get install {package})"
    if not os.access(SSHD, os.X_OK):
        return f"the emulated cluster needs {SSHD} (apt-get install openssh-server)"
    return None


class EmulatedCluster:
    """``nodes`` compute nodes and a login node on a switch whose links are shaped to
    ``link``. Use as a context manager, or :meth:`up` and :meth:`down` (idempotent).

    Node r is host r of :attr:`network` (its address :meth:`address`); the login node is
    the network's last host."""

    def __init__(self, nodes: int, link: LinkSpec = LinkSpec(None)):
        if not 1 <= nodes <= 250:
            raise NetworkError(f"emulated cluster: {nodes} nodes; between 1 and 250 are possible")
        self.nodes = nodes
        self.network = EmulatedNetwork(nodes + 1, link)
        self.folder: Path | None = None
        self._sshd: dict[str, subprocess.Popen] = {}

    # ---- names --------------------------------------------------------------------------

    @property
    def hosts(self) -> list[str]:
        """Every host's name: the nodes, then the login node."""
        return [*self.node_names, "login"]

    @property
    def node_names(self) -> list[str]:
        return [f"node{r}" for r in range(self.nodes)]

    def _index(self, host: str) -> int:
        if host not in self.hosts:
            raise NetworkError(f"emulated cluster: no host {host!r}; its hosts are {', '.join(self.hosts)}")
        return self.hosts.index(host)

    def address(self, host: str) -> str:
        return self.network.address(self._index(host))

    def namespace(self, host: str) -> str:
        return self.network.namespace(self._index(host))

    def tmp(self, host: str) -> Path:
        """The folder that is ``/tmp`` on ``host``."""
        self._index(host)
        return self.folder / "hosts" / host / "tmp"

    # ---- life cycle ---------------------------------------------------------------------

    def up(self) -> "EmulatedCluster":
        why = missing()
        if why:
            raise NetworkError(why)
        sweep_stale_folders()
        self.network.up()
        try:
            self.folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-"))
            self._write_files()
            for host in self.hosts:
                self._start_host(host)
            self._wait_listening()
        except BaseException:
            self.down()
            raise
        return self

    def _write_files(self) -> None:
        ssh = self.folder / "ssh"
        ssh.mkdir()
        for key in ("host_key", "user_key"):
            subprocess.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"parrbm emulated cluster {key}",
                    "-f",
                    str(ssh / key),
                ],
                check=True,
                capture_output=True,
            )
        shutil.copy(ssh / "user_key.pub", ssh / "authorized_keys")
        host_pub = (ssh / "host_key.pub").read_text().split()
        (ssh / "known_hosts").write_text(
            "".join(f"{h},{self.address(h)} {host_pub[0]} {host_pub[1]}\n" for h in self.hosts)
        )
        (ssh / "ssh_config").write_text(
            "Host *\n"
            "    IdentityFile /etc/ssh/user_key\n"
            "    UserKnownHostsFile /etc/ssh/known_hosts\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
            "    LogLevel ERROR\n"
            "    ConnectTimeout 10\n"
            "    ServerAliveInterval 5\n"
            "    ServerAliveCountMax 3\n"
        )
        (self.folder / "hosts.txt").write_text(
            "127.0.0.1 localhost\n" + "".join(f"{self.address(h)} {h}\n" for h in self.hosts)
        )
        for host in self.hosts:
            d = self.folder / "hosts" / host
            (d / "tmp").mkdir(parents=True)
            (d / "tmp").chmod(0o1777)
            (ssh / f"sshd_config.{host}").write_text(
                f"ListenAddress {self.address(host)}\n"
                "Port 22\n"
                "HostKey /etc/ssh/host_key\n"
                "AuthorizedKeysFile /etc/ssh/authorized_keys\n"
                "PermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "UsePAM no\n"
                "StrictModes no\n"
                "PrintMotd no\n"
                "PrintLastLog no\n"
                "MaxStartups 100\n"
                "MaxSessions 100\n"
                "ClientAliveInterval 5\n"
                "ClientAliveCountMax 3\n"
                "PidFile none\n"
            )

    def _start_host(self, host: str) -> None:
        d = self.folder / "hosts" / host
        # inside the host's own namespaces: its name, the cluster's /etc/hosts and /etc/ssh
        # (keys, client and server configuration), its own /tmp, /dev/shm and /run (sshd's
        # privilege separation folder lives there); then its sshd, in the foreground, so
        # that the host lives as long as this process. /tmp last: the cluster's folder is
        # under the machine's /tmp
        script = (
            "set -e\n"
            f"hostname {host}\n"
            f"mount --bind {self.folder / 'hosts.txt'} /etc/hosts\n"
            f"mount --bind {self.folder / 'ssh'} /etc/ssh\n"
            "mount -t tmpfs -o mode=1777 tmpfs /dev/shm\n"
            "mount -t tmpfs -o mode=755 tmpfs /run\n"
            "mkdir -p /run/sshd\n"
            f"mount --bind {d / 'tmp'} /tmp\n"
            f"exec {SSHD} -D -e -f /etc/ssh/sshd_config.{host}\n"
        )
        log = open(d / "sshd.log", "wb")
        try:
            self._sshd[host] = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.namespace(host),
                    "unshare",
                    "--mount",
                    "--uts",
                    "--ipc",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        waiting = list(self.hosts)
        while waiting:
            for host in list(waiting):
                p = self._sshd[host]
                if p.poll() is not None:
                    log = (self.folder / "hosts" / host / "sshd.log").read_text(errors="replace").strip()
                    raise NetworkError(
                        f"emulated cluster: the sshd of {host} exited with code {p.returncode}: {log[-400:]}"
                    )
                probe = subprocess.run(
                    ["ip", "netns", "exec", self.namespace(host), "ss", "-Hltn", f"src {self.address(host)}:22"],
                    capture_output=True,
                    text=True,
                )
                if probe.stdout.strip():
                    waiting.remove(host)
            if waiting and time.monotonic() > deadline:
                raise NetworkError(
                    f"emulated cluster: the sshd of {', '.join(waiting)} did not listen within {START_SECONDS:g} s"
                )
            if waiting:
                time.sleep(0.05)

    def down(self) -> None:
        """Kill every process on the hosts, delete their namespaces and the cluster's folder."""
        for p in self._sshd.values():
            if p.poll() is None:
                p.kill()
        for host in self.hosts if self.network.is_up else []:
            _kill_all(_pids_inside(self.namespace(host)))
        for p in self._sshd.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._sshd.clear()
        self.network.down()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> "EmulatedCluster":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # ---- using it -----------------------------------------------------------------------

    def enter(self, host: str) -> list[str]:
        """The command prefix that runs a program on ``host`` in all its namespaces, with the
        caller's environment and working directory (a user logged in there)."""
        p = self._sshd.get(host)
        if p is None or p.poll() is not None:
            raise NetworkError(f"emulated cluster: {host} is not up")
        # sshd runs under unshare's shell only until it execs: the host's namespaces are
        # those of the process the Popen started
        return ["nsenter", "-t", str(p.pid), "--net", "--mount", "--uts", "--ipc", "--"]

    def run(self, host: str, command: list[str], *, cwd: str = "/", **kwargs) -> subprocess.CompletedProcess:
        """``command`` on ``host`` (see :meth:`enter`) in ``cwd`` as that host sees it;
        ``kwargs`` as for subprocess.run."""
        return subprocess.run([*self.enter(host), *_in_folder(cwd, command)], **kwargs)

    def popen(self, host: str, command: list[str], *, cwd: str = "/", **kwargs) -> subprocess.Popen:
        return subprocess.Popen([*self.enter(host), *_in_folder(cwd, command)], **kwargs)

    def processes(self, host: str) -> list[tuple[int, str]]:
        """(pid, command line) of every process on ``host`` but its sshd listener."""
        out = []
        listener = self._sshd.get(host)
        for pid in _pids_inside(self.namespace(host)):
            if listener is not None and pid == listener.pid:
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            out.append((pid, cmd.strip()))
        return out

    def leftovers(self, host: str) -> list[str]:
        """What is left on ``host`` beyond the host itself: its processes (but sshd) and the
        entries of its /tmp."""
        procs = [f"process {pid}: {cmd}" for pid, cmd in self.processes(host)]
        files = [f"/tmp/{p.name}" for p in sorted(self.tmp(host).iterdir())]
        return procs + files


def _in_folder(cwd: str, command: list[str]) -> list[str]:
    # the folder is looked up once inside the host's mount namespace (its own /tmp)
    return ["sh", "-c", 'cd "$0" && exec "$@"', cwd, *command]


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
