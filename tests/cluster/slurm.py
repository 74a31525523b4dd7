"""A real single-node SLURM cluster on this machine: munged, slurmctld and slurmd.

Everything lives in one private directory (configuration, munge key and socket, state, spool,
logs) on free ports, so the cluster neither reads nor changes the system's /etc/slurm or
/etc/munge, and several of these can coexist with a site's own daemons. The daemons run in the
foreground as children of the test process and are stopped by their process ids.

Why these settings: the container has no systemd and no writable cgroup hierarchy, so process
tracking is `proctrack/linuxproc` and there is no task plugin; there is no accounting daemon
(`accounting_storage/none`), so `sacct` answers "accounting storage is disabled" and the
Snakemake plugin must query job states with `squeue`, which it only trusts when finished jobs
stay visible long enough: `MinJobAge` (here 1 h) must be at least 3x the plugin's
`init_seconds_before_status_checks` (see the test profile next to this module).

One file outside the directory: inside a job, the plugin's `slurm-jobstep` executor removes
every SLURM_* variable but a few job ids from the environment of `srun`, SLURM_CONF included,
so `srun` reads the compiled-in /etc/slurm/slurm.conf (as on a real site). When that file is
absent the cluster links it to its own configuration for its lifetime and removes the link on
stop; a machine with its own /etc/slurm/slurm.conf is left alone and the test is skipped.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PACKAGES = ["slurm-wlm", "munge"]
BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo"]
PARTITION = "pipetest"  # the name tests/cluster/slurm_profile selects
# Debian puts the daemons in /usr/sbin, which a non-login root shell may not have on PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")


def cannot_run(reason: str) -> None:
    """Skip with the reason, or fail where the cluster tests are required (CI sets
    PIPELINE_CLUSTER_TESTS=require, so a machine that cannot run them is not a silent pass)."""
    if os.environ.get("PIPELINE_CLUSTER_TESTS") == "require":
        pytest.fail(f"cluster test required but cannot run: {reason}")
    pytest.skip(reason)


def _missing() -> list[str]:
    return [b for b in BINARIES if shutil.which(b, path=SEARCH_PATH) is None]


def ensure_installed() -> float | None:
    """Install SLURM and munge from the OS packages when absent; the seconds it took, or None
    if they were already there. Skips (see `cannot_run`) where that is impossible."""
    if os.geteuid() != 0:
        cannot_run("slurmd runs jobs as their users, so it must run as root (and so must "
                   "`apt-get install slurm-wlm munge`)")
    if not _missing():
        return None
    if shutil.which("apt-get") is None:
        cannot_run("SLURM is not installed and this system has no apt-get (Debian/Ubuntu)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    start = time.monotonic()
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        except subprocess.TimeoutExpired:
            cannot_run(f"`{' '.join(cmd)}` did not finish in 10 minutes")
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            cannot_run(f"`{' '.join(cmd)}` failed: {' | '.join(tail)}")
    seconds = time.monotonic() - start
    if _missing():
        cannot_run(f"after installing {PACKAGES}, still missing: {', '.join(_missing())}")
    return seconds


def _die_with_parent() -> None:
    """In the daemon, before exec: SIGTERM when the test process dies, even by SIGKILL, so a
    killed test run leaves no daemons behind (Linux prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line(slurmd: str) -> str:
    """This host as slurmd sees it (`slurmd -C`: name, CPUs, sockets, cores, memory)."""
    out = subprocess.run([slurmd, "-C"], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("NodeName="))
    # the node is reached on loopback; its name stays the hostname slurmd looks itself up by
    return " ".join(f for f in line.split() if not f.startswith("UpTime=")) + (
        " NodeAddr=127.0.0.1 State=UNKNOWN"
    )


def _is_stale_link(target: Path) -> bool:
    """A link to the configuration of a test cluster whose slurmctld is no longer running."""
    if not target.parent.name.startswith("pipeline-slurm-"):
        return False
    try:
        os.kill(int((target.parent / "slurmctld.pid").read_text()), 0)
    except (OSError, ValueError):
        return True
    return False


class SlurmCluster:
    """munged + slurmctld + slurmd in `root`; `env` is the environment clients need."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.linked: list[Path] = []  # what we created under /etc (removed on stop)
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf),
                    "PATH": SEARCH_PATH}

    def _bin(self, name: str) -> str:
        return shutil.which(name, path=SEARCH_PATH)

    def write_config(self) -> None:
        r = self.root
        host = socket.gethostname().split(".")[0]
        for d in ("state", "spool"):
            (r / d).mkdir()
        key = r / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self.conf.write_text("\n".join([
            "ClusterName=pipetest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={r / 'munge.sock'}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "MinJobAge=3600",  # finished jobs stay in squeue for the whole test
            "ReturnToService=2",
            "MpiDefault=none",
            "KillWait=5",
            _node_line(self._bin("slurmd")),
            f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def link_system_conf(self) -> None:
        """/etc/slurm/slurm.conf -> our slurm.conf, for srun inside jobs (see module doc)."""
        if SYSTEM_CONF.is_symlink() and _is_stale_link(Path(os.readlink(SYSTEM_CONF))):
            SYSTEM_CONF.unlink()  # left by a test run that was killed before it cleaned up
        if SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
            cannot_run(f"{SYSTEM_CONF} exists (a real SLURM installation); the test cluster "
                       "does not replace a site's configuration")
        if not SYSTEM_CONF.parent.is_dir():
            SYSTEM_CONF.parent.mkdir(parents=True)
            self.linked.append(SYSTEM_CONF.parent)
        SYSTEM_CONF.symlink_to(self.conf)
        self.linked.append(SYSTEM_CONF)

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.stdout", "wb")
        self.procs.append(subprocess.Popen([self._bin(name), *args], stdout=log,
                                           stderr=subprocess.STDOUT, env=self.env,
                                           preexec_fn=_die_with_parent))

    def start(self, timeout: float = 60.0) -> None:
        r = self.root
        self.write_config()
        self.link_system_conf()
        self._spawn("munged", "-F", f"--key-file={r / 'munge.key'}",
                    f"--socket={r / 'munge.sock'}", f"--pid-file={r / 'munged.pid'}",
                    f"--log-file={r / 'munged.log'}", f"--seed-file={r / 'munged.seed'}")
        self._wait(lambda: (r / "munge.sock").exists(), timeout, "munged socket")
        self._spawn("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-f", str(self.conf))
        self._wait(lambda: self.node_state() == "idle", timeout, "the node to be idle")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited ({p.returncode}) waiting for "
                                       f"{what}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}:\n{self.logs()}")

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([self._bin(cmd[0]), *cmd[1:]], capture_output=True, text=True,
                              env=self.env, check=check, timeout=60)

    def node_state(self) -> str:
        proc = self.run("sinfo", "-h", "-o", "%T", check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def jobs(self) -> dict[str, dict[str, str]]:
        """Every job slurmctld still knows (finished ones for MinJobAge): id -> fields."""
        fmt = "%i|%T|%j|%k"
        out = self.run("squeue", "--states=all", "--noheader", f"--format={fmt}").stdout
        rows = {}
        for line in out.splitlines():
            jobid, state, name, comment = line.split("|", 3)
            rows[jobid] = {"state": state, "name": name, "comment": comment}
        return rows

    def logs(self) -> str:
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            p = self.root / name
            if p.exists():
                parts.append(f"--- {name} (last lines)\n" +
                             "\n".join(p.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel what is left, then stop the daemons we started (by pid), newest first."""
        if self.conf.exists() and any(p.poll() is None for p in self.procs):
            self.run("scancel", "--full", "--user", str(os.getuid()), check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    active = [j for j in self.jobs().values()
                              if j["state"] in ("PENDING", "RUNNING", "COMPLETING")]
                except (subprocess.SubprocessError, ValueError):
                    break
                if not active:
                    break
                time.sleep(0.5)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        self.procs.clear()
        for path in reversed(self.linked):
            if path.is_symlink():
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        self.linked.clear()


def start_cluster() -> tuple[SlurmCluster, Path]:
    """A running cluster in a fresh private directory (the caller stops it and removes it).

    munged insists that every directory above its socket is world-executable, which pytest's
    0700 tmp_path is not, hence a directory of our own under the system temp dir."""
    root = Path(tempfile.mkdtemp(prefix="pipeline-slurm-"))
    root.chmod(0o755)
    cluster = SlurmCluster(root)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster, root
