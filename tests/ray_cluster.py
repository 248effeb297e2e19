"""A real two-node Ray cluster on this one machine, for tests of jobs that must run on a node
that cannot read the app's workspace. This is a helper, not a test file.

The head node runs as root, like the app's machine: it holds the GCS and the dashboard (the
Jobs API), and a job's entrypoint runs there unless it asks for resources only node 2 has.
Node 2 runs as another user (``mormnode``, created as a system user if absent, else
``nobody``), with its own temp dir, HOME and cache folders, and a custom resource
(``{"node2": 1}`` by default) that places tasks on it.

How the workspace is hidden from node 2: by file permissions. Every ``hidden`` folder is made
root's with mode 0700, and ``start()`` checks, as the node-2 user, that listing it or looking
inside it raises PermissionError (pytest's base temp folder is already 0700, so every test's
``tmp_path`` is hidden when that folder is). A mount namespace (``unshare -m`` and a tmpfs over
the workspace) was not used: node 2 would still run as root and could reach the hidden files
through ``/proc/<a head pid>/root/...`` or any path the namespace did not cover; it needs
CAP_SYS_ADMIN, which CI containers often lack; and the object store in /dev/shm and the Ray
sockets would stay shared anyway. Another uid is checked by the kernel on every path to a file,
which is what a second machine that does not mount the app's disk looks like to a job.

The node-2 user must run the venv's interpreter, which may live under a folder it cannot
enter (pyenv under /root, mode 0700). ``start()`` grants that user, and only it, the right to
traverse (not list) each such folder above the interpreter, its standard library, the venv and
the repository, as a POSIX ACL entry; the entry is left in place, since another test run may be
using the same user at the same time.

Every port is picked free and passed explicitly; workers bind ports the OS chooses
(``--min-worker-port 0 --max-worker-port 0``), so the two nodes, and other Ray clusters on the
machine, never collide on one. Ray 2.60 keeps no node on loopback: it replaces
``--node-ip-address 127.0.0.1`` by the machine's own address (both nodes alike, so a driver
here still attaches to the head) and its GCS, raylets and agents listen on every interface;
only the dashboard binds 127.0.0.1. The GCS health check is tightened so that a killed node is
declared dead in about 1.5 s rather than the default 20 s or more. Each node's
``ray start --block`` leads a session of its own, which every process of that node (workers
too) stays in, except a job's entrypoint, which Ray starts in a session of its own; every
process also carries the cluster's mark in its environment. ``kill_node2`` and ``stop`` find a
node's processes by either.
"""

from __future__ import annotations

import atexit
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NODE_USER = "mormnode"
MARKER = "MORM_TEST_RAY_NODE"  # its value names the cluster and the node of a process
# The GCS declares a node dead after this many failed checks in a row; a killed raylet fails
# each at once (connection refused), so ~1 s + 5 x 0.3 s. The 2 s timeout keeps a node of a
# loaded machine alive.
HEALTH_CHECK = {"RAY_health_check_initial_delay_ms": "1000",
                "RAY_health_check_period_ms": "300",
                "RAY_health_check_timeout_ms": "2000",
                "RAY_health_check_failure_threshold": "5"}
OBJECT_STORE_BYTES = 200 * 2**20


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def skip_reason() -> str | None:
    """Why a two-node cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "a second Ray node as another user needs root"
    if not Path(sys.executable).with_name("ray").exists():
        return "ray is not installed: pip install 'ray[default]'"
    return None


def node_user() -> pwd.struct_passwd:
    """The user node 2 runs as: ``mormnode``, created if absent, else ``nobody``."""
    try:
        return pwd.getpwnam(NODE_USER)
    except KeyError:
        pass
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                           "/usr/sbin/nologin", NODE_USER], capture_output=True)
    try:  # made here, or by a test run beside this one (useradd then fails)
        return pwd.getpwnam(NODE_USER)
    except KeyError:
        print(f"could not add user {NODE_USER} ({made.stderr.decode().strip()}); node 2 runs "
              "as nobody")
        return pwd.getpwnam("nobody")


def run_as(user: pwd.struct_passwd, cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                          capture_output=True, text=True, timeout=60, **kw)


# POSIX ACL as the kernel stores it in the system.posix_acl_access attribute (acl_ea.h):
# a little-endian u32 version 2, then (u16 tag, u16 perm, u32 id) entries sorted by tag, id.
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_NO_ID = 0xFFFFFFFF
_ACL = "system.posix_acl_access"


def grant_traverse(folder: Path, uid: int) -> None:
    """Let user ``uid`` traverse ``folder`` (x, not r) with an ACL entry, as
    ``setfacl -m u:<uid>:--x folder`` would; the owner's group gains nothing."""
    try:
        raw = os.getxattr(folder, _ACL)
        entries = {(tag, eid): perm for tag, perm, eid in struct.iter_unpack("<HHI", raw[4:])}
    except OSError:  # no ACL yet: the one the mode bits stand for
        mode = folder.stat().st_mode
        entries = {(_USER_OBJ, _NO_ID): mode >> 6 & 7, (_GROUP_OBJ, _NO_ID): mode >> 3 & 7,
                   (_OTHER, _NO_ID): mode & 7}
    entries[(_USER, uid)] = entries.get((_USER, uid), 0) | 1
    old_mask = entries.get((_MASK, _NO_ID))
    entries[(_MASK, _NO_ID)] = (old_mask | 1 if old_mask is not None else
                                entries[(_GROUP_OBJ, _NO_ID)] | 1)
    raw = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, eid) for (tag, eid), perm in sorted(entries.items()))
    try:
        os.setxattr(folder, _ACL, raw)
    except OSError as e:
        raise RuntimeError(f"cannot let uid {uid} traverse {folder} ({e}); run "
                           f"'chmod o+x {folder}' once, or test as a user who can") from e


def blocked_folders(user: pwd.struct_passwd, paths: list[Path]) -> list[Path]:
    """The folders among and above ``paths`` that ``user`` may not traverse."""
    folders = sorted({p for path in paths for p in (path, *path.parents) if p.is_dir()})
    check = 'for d in "$@"; do [ -x "$d" ] || echo "$d"; done'
    out = run_as(user, ["/bin/sh", "-c", check, "sh", *map(str, folders)], cwd="/").stdout
    return [Path(line) for line in out.splitlines()]


def let_through(user: pwd.struct_passwd, paths: list[Path]) -> list[Path]:
    """Grant ``user`` the traversal of each folder among and above ``paths`` it cannot
    traverse, shallowest first (what lies under a closed folder is blocked by it alone);
    returns the folders granted."""
    granted: list[Path] = []
    while blocked := blocked_folders(user, paths):
        if granted and blocked[0] == granted[-1]:
            raise RuntimeError(f"{user.pw_name} still cannot traverse {blocked[0]}")
        grant_traverse(blocked[0], user.pw_uid)
        granted.append(blocked[0])
    return granted


def node_pids(session: int, marker: str) -> list[int]:
    """The live processes of a node: in the session its ``ray start`` leads (Ray's own
    processes and workers never leave it), or with ``MARKER=marker`` in their environment."""
    needle = f"{MARKER}={marker}\0".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:  # fields after the command's closing paren: state ppid pgrp session ...
            state, _, _, sid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            if state != "Z" and (int(sid) == session or
                                 needle in (proc / "environ").read_bytes()):
                pids.append(int(proc.name))
        except (OSError, ValueError, IndexError):  # gone meanwhile
            pass
    return pids


def kill_node(session: int, marker: str, timeout: float = 10) -> None:
    """SIGKILL every process of a node until none is left (or raise)."""
    deadline = time.monotonic() + timeout
    while pids := node_pids(session, marker):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Ray processes {pids} of node {marker} outlived SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def jobs_api_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/jobs/", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class TwoNodeCluster:
    """A head node (root) and node 2 (another user) on this machine.

    ``address`` is the GCS address for ``ray.init`` or ``ray start --address``;
    ``dashboard_url`` the Jobs API for ``JobSubmissionClient`` or ``RayBackend``;
    ``head_node_id`` and ``node2_node_id`` are Ray's node ids (hex); ``node2_user`` the user
    node 2 runs as and ``node2_home`` its HOME, a folder both nodes may write. The output of
    each ``ray start`` is in ``tmp/head.log`` and ``tmp/node2.log``.
    """

    def __init__(self, tmp: Path, hidden: list[Path], node2_resources: dict[str, float] |
                 None = None, head_cpus: int = 1, node2_cpus: int = 1):
        self.tmp = Path(tmp)
        self.hidden = [Path(p) for p in hidden]
        self.node2_resources = {"node2": 1} if node2_resources is None else node2_resources
        self.head_cpus, self.node2_cpus = head_cpus, node2_cpus
        self.user = node_user()
        self.node2_user: str = self.user.pw_name
        self.address = self.dashboard_url = self.head_node_id = self.node2_node_id = ""
        self.node2_home = Path()
        self.ray_cli = Path(sys.executable).with_name("ray")
        self.token = secrets.token_hex(4)
        # node -> its `ray start --block`, the leader of the node's session
        self.sessions: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._dirs: list[Path] = []
        self._stopped = False

    # -- start ------------------------------------------------------------------------------
    def start(self, timeout: float = 90) -> None:
        """Start both nodes; return once both are alive and the Jobs API answers. On any
        failure, stop whatever started and raise, with the tail of the failing node's log."""
        self._stopped = False
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        try:
            self._hide_and_check()
            self._start_head(deadline)
            self._start_node2()
            self._wait_for_nodes(deadline)
        except BaseException:
            self.stop()
            raise

    def _env(self, node: str) -> dict[str, str]:
        env = {**os.environ, **HEALTH_CHECK, MARKER: f"{self.token}-{node}",
               # the venv first: a job's entrypoint "python" must be the one with Ray
               "PATH": f"{self.ray_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}",
               # no drain on SIGTERM: a node goes down in ~2 s rather than 30
               "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
        env.pop("RAY_ADDRESS", None)
        return env

    def _hide_and_check(self) -> None:
        u = self.user
        for p in self.hidden:
            p.mkdir(parents=True, exist_ok=True)
            os.chown(p, 0, 0)
            p.chmod(0o700)
        needed = [Path(sys.executable), Path(sys.executable).resolve(), Path(sys.prefix),
                  Path(sys.base_prefix), REPO]
        let_through(u, needed)
        # As the node-2 user: the interpreter and Ray load, and each hidden folder refuses
        # both a listing and a look at a name inside it.
        probe = ("import os, sys, ray\n"
                 "for p in sys.argv[1:]:\n"
                 "    for f, arg in ((os.listdir, p), (os.stat, os.path.join(p, 'x'))):\n"
                 "        try:\n"
                 "            f(arg)\n"
                 "        except PermissionError:\n"
                 "            continue\n"
                 "        sys.exit(f'{arg} is not hidden: {f.__name__} succeeded')\n")
        r = run_as(u, [sys.executable, "-c", probe, *map(str, self.hidden)], cwd="/",
                    env={"PATH": "/usr/bin:/bin", "HOME": "/"})
        if r.returncode != 0:
            raise RuntimeError(f"as user {u.pw_name}: {r.stderr.strip()[-2000:]}")

    def _node_flags(self) -> list[str]:
        agent, agent_grpc, env_agent, metrics, nm, om = free_ports(6)
        # Ray replaces the loopback address by the machine's own (module docstring)
        return ["--node-ip-address", "127.0.0.1", "--dashboard-agent-listen-port", str(agent),
                "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port",
                str(env_agent), "--metrics-export-port", str(metrics), "--node-manager-port",
                str(nm), "--object-manager-port", str(om), "--min-worker-port", "0",
                "--max-worker-port", "0", "--object-store-memory", str(OBJECT_STORE_BYTES),
                "--num-gpus", "0", "--disable-usage-stats"]

    def _start_head(self, deadline: float) -> None:
        gcs, dash, client = free_ports(3)
        temp = Path(tempfile.mkdtemp(prefix="rayh-"))  # short: socket paths are <108 bytes
        self._dirs.append(temp)
        self.address = f"127.0.0.1:{gcs}"
        self.dashboard_url = f"http://127.0.0.1:{dash}"
        cmd = [str(self.ray_cli), "start", "--head", "--block", "--port", str(gcs),
               "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
               "--dashboard-port", str(dash), "--ray-client-server-port", str(client),
               *self._node_flags(), "--num-cpus", str(self.head_cpus), "--resources", "{}",
               "--temp-dir", str(temp)]
        self._popen("head", cmd, self._env("head"), REPO)
        while True:  # node 2 needs the GCS to answer, not yet the dashboard
            self._check_alive("head", deadline)
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", gcs)) == 0:
                    return
            time.sleep(0.1)

    def _start_node2(self) -> None:
        u = self.user
        base = Path(tempfile.mkdtemp(prefix="rayn-"))
        self._dirs.append(base)
        for folder in (base, base / "home", base / "r"):
            folder.mkdir(exist_ok=True)
            os.chown(folder, u.pw_uid, u.pw_gid)
        self.node2_home = home = base / "home"
        env = {**self._env("node2"), "HOME": str(home), "USER": u.pw_name,
               "LOGNAME": u.pw_name, "XDG_CACHE_HOME": f"{home}/.cache",
               "HF_HOME": f"{home}/.cache/huggingface", "TMPDIR": str(base)}
        cmd = [str(self.ray_cli), "start", "--block", "--address", self.address,
               *self._node_flags(), "--num-cpus", str(self.node2_cpus),
               "--resources", json.dumps(self.node2_resources), "--temp-dir", str(base / "r")]
        self._popen("node2", cmd, env, home, user=u)

    def _popen(self, node: str, cmd: list[str], env: dict, cwd: Path,
               user: pwd.struct_passwd | None = None) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
        with open(self.tmp / f"{node}.log", "wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    start_new_session=True, **as_user)
        self._procs[node] = proc
        self.sessions[node] = proc.pid

    def _check_alive(self, node: str, deadline: float) -> None:
        proc = self._procs[node]
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {proc.returncode}" if proc.poll() is not None else "timed out"
            raise RuntimeError(f"Ray {node} node {why}:\n{_tail(self.tmp / f'{node}.log')}")

    def nodes(self) -> list:
        """Every node the head knows of, dead ones too (``ray.util.state`` NodeStates)."""
        from ray.util.state import list_nodes

        return list_nodes(address=self.dashboard_url, raise_on_missing_output=False)

    def _wait_for_nodes(self, deadline: float) -> None:
        from ray.util.state.exception import RayStateApiException

        alive: list = []
        while len(alive) < 2:
            self._check_alive("head", deadline)
            self._check_alive("node2", deadline)
            time.sleep(0.2)
            if jobs_api_up(self.dashboard_url):
                try:
                    alive = [n for n in self.nodes() if n.state == "ALIVE"]
                except (RayStateApiException, OSError):  # its state module still starting
                    continue
        for n in alive:
            if n.is_head_node:
                self.head_node_id = n.node_id
            else:
                self.node2_node_id = n.node_id

    # -- failure and stop -------------------------------------------------------------------
    def node_state(self, node_id: str) -> str:
        """ALIVE or DEAD as the head reports it."""
        return next((n.state for n in self.nodes() if n.node_id == node_id), "UNKNOWN")

    def pids(self) -> list[int]:
        """The live processes of both nodes."""
        return [pid for node, session in self.sessions.items()
                for pid in node_pids(session, f"{self.token}-{node}")]

    def kill_node2(self, timeout: float = 60) -> None:
        """SIGKILL every process of node 2 at once, as when its machine is lost; return once
        the head reports the node DEAD."""
        deadline = time.monotonic() + timeout
        kill_node(self.sessions["node2"], f"{self.token}-node2")
        self._procs.pop("node2").wait(timeout=10)
        while (state := self.node_state(self.node2_node_id)) != "DEAD":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the head still reports node 2 {state} after {timeout} s")
            time.sleep(0.1)

    def stop(self, grace: float = 3) -> None:
        """Stop both nodes: SIGTERM, then after ``grace`` s SIGKILL whatever of either node
        is left; remove their temp dirs. Safe to call more than once, and after a failed
        start."""
        if self._stopped:
            return
        procs = [self._procs.pop(node) for node in ("node2", "head") if node in self._procs]
        for proc in procs:
            proc.terminate()
        end = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for node, session in self.sessions.items():
            kill_node(session, f"{self.token}-{node}")
        for proc in procs:
            proc.wait(timeout=10)
        while self._dirs:
            shutil.rmtree(self._dirs.pop(), ignore_errors=True)
        self._stopped = True  # a session id may be some other process's once this one ends
        atexit.unregister(self.stop)
