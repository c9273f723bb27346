"""Embedded hosts: a real Linux host per sandbox instance, booted with systemd-nspawn, reached over ssh.

In the embedded sandbox an instance is a row in moto. This module gives it a
body: a Debian bookworm root filesystem built once by ``debootstrap`` and
cached, an overlay copy of it per host, a network namespace of its own, and
``systemd-nspawn --boot`` running systemd inside. The host carries the
instance's private IP (the one moto assigned), answers ssh with a per-session
key, and can be configured by its role's Ansible playbook and inspected with
testinfra, offline.

Addresses: each host gets a /30 out of 169.254.0.0/16 (link-local, never
routed) on a veth pair: ``169.254.a.b+1`` on the root namespace's side,
``169.254.a.b+2`` inside, plus the private IP as a /32 inside only. The
session reaches the host on its link address only, so the only addresses
ever contacted are 127.0.0.1 (moto) and our namespaces' link addresses; a
private IP that happens to exist on the real network is never routed to.
The container has no default route: no package mirror, no internet.

Everything one host creates is named ``iih-<hash>``: the network namespace,
the root-side veth, the directory in the run dir that holds the overlay. So
:func:`leftovers` can find what a crashed session left without any state of
its own, and :func:`stop_leftover_hosts` stops the hosts whose directories are
under a run's folder (what ``immutable-infra down`` does after a SIGKILL).

Needs root, ``systemd-nspawn`` (systemd-container), ``debootstrap`` and
``ip`` (iproute2): ``tools/install-host-runtime`` installs them;
:func:`runtime_available` says which is missing so the tests skip with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from filelock import FileLock

from immutable_infra.errors import ToolError
from immutable_infra.inventory import tags_of
from immutable_infra.sandbox import default_cache_dir
from immutable_infra.timings import record_timing

#: Prefix of every name this module creates (netns, veth, overlay directory).
PREFIX = "iih-"
#: Where the link-address slots are claimed (one directory per /30 in use).
SLOTS_DIR = Path("/run/immutable-infra/host-slots")
NETNS_DIR = Path("/run/netns")
#: nspawn's per-machine mount propagation directory (named after --machine, so ``iih-...`` too).
NSPAWN_PROPAGATE = Path("/run/systemd/nspawn/propagate")
#: nspawn's image locks, one empty file per directory booted; removed by stop() (nspawn leaves them).
NSPAWN_LOCKS = Path("/run/systemd/nspawn/locks")
#: The Debian suite the hosts run and where debootstrap fetches it (the machine's own mirror).
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: How long a host may take from nspawn start to ssh answering.
BOOT_TIMEOUT = 30.0
#: How long stop() waits for a clean poweroff before killing.
POWEROFF_TIMEOUT = 10.0

#: What the role contracts need, baked into the image because the hosts have
#: no network to a package mirror: systemd/systemd-sysv/dbus to boot under
#: nspawn; openssh-server for testinfra and Ansible; python3 (+ python3-apt,
#: sudo) so Ansible modules run, the apt module included (``state=present`` on
#: a baked package is a no-op offline); iproute2 and procps so testinfra's
#: ``addresses``, ``socket`` and ``process`` modules work; nginx-light as a
#: real service a role can configure, enable and start (it runs under nspawn,
#: listens on a port, and is disabled in the image so a playbook's
#: ``enabled: true, state: started`` is visible); curl for checks from inside.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "debian12-base": (
        "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt",
        "sudo", "iproute2", "procps", "curl", "ca-certificates", "nginx-light",
    ),
}
#: Commands run in the fresh rootfs (chroot) before it is cached; part of its hash.
ROOTFS_SETUP = (
    "systemctl disable nginx.service",
    "systemctl enable ssh.service",
    "apt-get clean",
    "rm -rf /var/lib/apt/lists/*",
)


class EmbeddedHostError(ToolError):
    """An embedded host could not be built, started, reached or stopped (a tool problem, not a finding)."""


# -- runtime ----------------------------------------------------------------------------------

_SBIN_PATH = os.pathsep.join(["/usr/local/sbin", "/usr/sbin", "/sbin"])


def _which(name: str) -> str | None:
    """shutil.which with the sbin directories added (debootstrap and ip live there)."""
    return shutil.which(name) or shutil.which(name, path=_SBIN_PATH)


def runtime_available() -> str | None:
    """None when embedded hosts can run here, else the reason (one line, with the fix)."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "embedded hosts need Linux"
    if os.geteuid() != 0:
        return "embedded hosts need root (network namespaces, overlay mounts, systemd-nspawn)"
    missing = [name for name in ("systemd-nspawn", "debootstrap", "ip", "ssh", "ssh-keygen") if _which(name) is None]
    if missing:
        return f"embedded hosts need {', '.join(missing)}: run tools/install-host-runtime"
    modules = Path("/lib/modules") / os.uname().release
    if "overlay" not in Path("/proc/filesystems").read_text() and not modules.is_dir():
        return "embedded hosts need overlayfs (modprobe overlay)"
    return None


def _run(cmd: list[str], what: str, *, log: Path | None = None, timeout: float = 60.0) -> str:
    """Run a command; on failure raise one line naming what, the command and the output tail or log."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EmbeddedHostError(f"{what}: `{' '.join(cmd)}` timed out after {timeout:.0f} s") from None
    except FileNotFoundError:
        raise EmbeddedHostError(f"{what}: {cmd[0]} not found: run tools/install-host-runtime") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        where = f" (log: {log})" if log else ""
        raise EmbeddedHostError(f"{what}: `{' '.join(cmd)}` exited {proc.returncode}: {' | '.join(tail)}{where}")
    return proc.stdout


# -- the root filesystem ----------------------------------------------------------------------


def template_key(template: str) -> str:
    """``<template>-<hash>``: the hash covers suite, packages and setup, so changing any rebuilds."""
    try:
        packages = TEMPLATES[template]
    except KeyError:
        raise EmbeddedHostError(f"unknown host template {template!r}; known: {', '.join(sorted(TEMPLATES))}") from None
    text = "\n".join([SUITE, *sorted(packages), *ROOTFS_SETUP])
    return f"{template}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _mirror() -> str:
    """The machine's own Debian mirror, from /etc/apt/sources.list*; deb.debian.org when none is named."""
    found: list[str] = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        with contextlib.suppress(OSError):
            text = path.read_text()
            found += re.findall(r"^\s*URIs:\s*(\S+/debian)/?\s*$", text, re.M)
            found += re.findall(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s+\S+", text, re.M)
    return found[0] if found else DEFAULT_MIRROR


def build_rootfs(template: str = "debian12-base", cache_dir: Path | str | None = None) -> Path:
    """The cached root filesystem of ``template``, built by debootstrap the first time; returns its path.

    Lives in ``<cache>/hosts/<template>-<hash>/rootfs`` (cache: IMMUTABLE_INFRA_CACHE, else
    ~/.cache/immutable-infra). Built in a temporary directory, marked ``complete``, then
    renamed into place, under a file lock: two sessions never build it twice, and a
    half-built tree is never used.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = template_key(template)
    final = cache / "hosts" / key
    if (final / "complete").exists():
        return final / "rootfs"
    reason = runtime_available()
    if reason:
        raise EmbeddedHostError(f"cannot build host image {key}: {reason}")
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / "complete").exists():
            return final / "rootfs"
        if final.exists():  # left by an interrupted rename or by hand: not trusted
            shutil.rmtree(final)
        tmp = final.parent / f"{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        log = final.parent / f"{key}.build.log"
        started = time.monotonic()
        cmd = [
            _which("debootstrap") or "debootstrap", "--variant=minbase",
            "--include=" + ",".join(TEMPLATES[template]), SUITE, str(tmp / "rootfs"), _mirror(),
        ]
        with open(log, "w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
            if rc != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise EmbeddedHostError(f"host image {key}: debootstrap exited {rc} (log: {log})")
            for line in ROOTFS_SETUP:
                out.write(f"$ chroot {tmp / 'rootfs'} sh -c {line!r}\n")
                out.flush()
                rc = subprocess.run(
                    ["chroot", str(tmp / "rootfs"), "sh", "-c", line],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                ).returncode
                if rc != 0:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise EmbeddedHostError(f"host image {key}: `{line}` in the new rootfs exited {rc} (log: {log})")
            out.write(f"built in {time.monotonic() - started:.1f} s\n")
        (tmp / "complete").write_text(f"{time.monotonic() - started:.1f}\n")
        os.rename(tmp, final)
    return final / "rootfs"


def image_packages(rootfs: Path | str) -> dict[str, str]:
    """Package -> version installed in an image's root filesystem (its ``/var/lib/dpkg/status``), what the image
    was baked with: the ``"baked"`` pins of host contracts are read against it. The versions are dpkg's, as
    ``dpkg-query -W -f='${Version}'`` prints them on the host."""
    path = Path(rootfs) / "var/lib/dpkg/status"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise EmbeddedHostError(f"host image {rootfs}: cannot read its package list {path}: {exc.strerror}") from None
    out: dict[str, str] = {}
    for paragraph in text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", paragraph, re.M))
        if fields.get("Package") and fields.get("Version") and fields.get("Status", "").endswith(" installed"):
            out[fields["Package"]] = fields["Version"]
    return out


# -- hosts ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SessionKey:
    """The session's ssh key pair and the ssh_config that uses it (host keys not checked: throwaway hosts)."""

    private_key: Path
    public_key: Path
    ssh_config: Path


def session_key(run_dir: Path | str) -> SessionKey:
    """Create (once per run dir) an ed25519 key pair and an ssh_config for the embedded hosts."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir / "id_ed25519"
    if not key.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "immutable-infra-session", "-f", str(key)],
             "session ssh key")
    config = run_dir / "ssh_config"
    if not config.exists():
        config.write_text(
            "Host *\n"
            "  User root\n"
            f"  IdentityFile {key}\n"
            "  IdentitiesOnly yes\n"
            "  StrictHostKeyChecking no\n"
            "  UserKnownHostsFile /dev/null\n"
            "  LogLevel ERROR\n"
            "  ConnectTimeout 5\n"
            "  BatchMode yes\n"
        )
    return SessionKey(key, key.with_suffix(".pub"), config)


def _slot_addresses(slot: int) -> tuple[str, str]:
    base = 169 * 2**24 + 254 * 2**16 + slot * 4
    return (socket.inet_ntoa((base + 1).to_bytes(4, "big")), socket.inet_ntoa((base + 2).to_bytes(4, "big")))


#: /30 slots of 169.254.0.0/16, minus 169.254.0.0/24 and 169.254.169.0/24 (the metadata address's).
_SLOTS = [s for s in range(16384) if s // 64 not in (0, 169)]


def _claim_slot(ident: str) -> int:
    """Claim a free /30 (mkdir is the atomic claim), starting from one derived from the host's id."""
    SLOTS_DIR.mkdir(parents=True, exist_ok=True)
    start = int(ident, 16) % len(_SLOTS)
    for i in range(len(_SLOTS)):
        slot = _SLOTS[(start + i) % len(_SLOTS)]
        try:
            (SLOTS_DIR / str(slot)).mkdir()
        except FileExistsError:
            continue
        (SLOTS_DIR / str(slot) / "owner").write_text(PREFIX + ident + "\n")
        return slot
    raise EmbeddedHostError("no free link address for another embedded host (169.254.0.0/16 used up)")


@dataclasses.dataclass
class HostHandle:
    """One running embedded host. ``url`` is a testinfra URL; ``stop()`` undoes everything, twice is fine."""

    name: str
    private_ip: str
    link_ip: str
    netns: str
    directory: Path
    console_log: Path
    key: SessionKey
    process: subprocess.Popen | None = None
    _slot: int | None = None
    #: nspawn's lock file for the merged directory (/run/systemd/nspawn/locks/inode-DEV:INO): nspawn leaves it.
    nspawn_lock: Path | None = None
    _mounted: bool = False
    boot_seconds: float = 0.0
    #: The sandbox instance this host embodies, when it was started for one.
    instance_id: str | None = None

    @property
    def url(self) -> str:
        return f"ssh://root@{self.link_ip}?ssh_config={self.key.ssh_config}&ssh_identity_file={self.key.private_key}"

    @property
    def merged(self) -> Path:
        return self.directory / "merged"

    def ssh_command(self, *command: str) -> list[str]:
        """An ssh command line that runs ``command`` on the host."""
        return ["ssh", "-F", str(self.key.ssh_config), f"root@{self.link_ip}", *command]

    def stop(self) -> None:
        """Power the host off (nspawn passes SIGTERM on as SIGRTMIN+4; killed after POWEROFF_TIMEOUT), remove veth
        and netns, nspawn's lock and propagate directory, unmount the overlay, free the link address."""
        if self.process is not None:
            _stop_nspawn(self.process)
            self.process = None
        errors = _undo_host(self.netns, self.merged, lock=self.nspawn_lock, slot=self._slot)
        self._mounted = False
        self._slot = None
        if errors:
            raise EmbeddedHostError(f"host {self.name}: stop left something behind: {'; '.join(errors)}")


def _netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def _mountpoints() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            points.append(fields[4].replace("\\040", " "))
    return points


def _is_mounted(path: Path) -> bool:
    return str(path) in _mountpoints()


def _processes_in(root: Path) -> list[int]:
    """Pids whose root directory is ``root`` (the container's processes, seen from outside)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "root") == str(root):
                pids.append(int(entry.name))
    return pids


def _stop_nspawn(process: subprocess.Popen) -> None:
    """Ask systemd in the container to power off (through nspawn); kill nspawn's group after POWEROFF_TIMEOUT."""
    if process.poll() is None:  # nspawn turns SIGTERM into --kill-signal (SIGRTMIN+4: poweroff) for the container
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=POWEROFF_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
    # a container init that outlived its nspawn is killed by _undo_host (_kill_processes), as for a leftover host


def _nspawn_pids(netns: str) -> list[int]:
    """Pids of the systemd-nspawn processes running the host of network namespace ``netns`` (from their cmdline)."""
    marker = f"--network-namespace-path={NETNS_DIR / netns}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if marker in args and any(a.endswith(b"systemd-nspawn") for a in args[:1]):
                pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, which nobody may ever reap once its parent is gone, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _kill_processes(netns: str, merged: Path, timeout: float = POWEROFF_TIMEOUT) -> None:
    """Stop the host's nspawn processes found by their cmdline (no Popen: a leftover of a killed session) and any
    process whose root is ``merged``: SIGTERM (a poweroff, as nspawn passes it on), SIGKILL after ``timeout``."""
    pids = [pid for pid in _nspawn_pids(netns) if _alive(pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids + _processes_in(merged):
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while (any(_alive(p) for p in pids) or [p for p in _processes_in(merged) if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)


def _nspawn_lock_of(merged: Path) -> Path | None:
    """nspawn's lock file for ``merged`` (named after the overlay's device and inode), while it is mounted."""
    if not _is_mounted(merged):
        return None
    with contextlib.suppress(OSError):
        st = os.stat(merged)
        return NSPAWN_LOCKS / f"inode-{st.st_dev}:{st.st_ino}"
    return None


def _slots_of(netns: str) -> list[Path]:
    """The link-address slot directories whose owner file names ``netns``."""
    found = []
    with contextlib.suppress(OSError):
        for p in SLOTS_DIR.iterdir():
            with contextlib.suppress(OSError):
                if (p / "owner").read_text().strip() == netns:
                    found.append(p)
    return found


def _undo_host(netns: str, merged: Path, *, lock: Path | None = None, slot: int | None = None) -> list[str]:
    """Undo what one host left once its nspawn is stopped or gone: stray processes, veth and netns, nspawn's lock
    and propagate directory, the overlay mount, its link-address slot. Returns what could not be undone."""
    errors: list[str] = []
    _kill_processes(netns, merged)
    if _netns_exists(netns) or (Path("/sys/class/net") / netns).exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["ip", "link", "del", netns], capture_output=True, timeout=10)
    if _netns_exists(netns):
        proc = subprocess.run(["ip", "netns", "del", netns], capture_output=True, text=True, timeout=10)
        if proc.returncode != 0 and _netns_exists(netns):
            errors.append(f"`ip netns del {netns}`: {proc.stderr.strip()}")
    lock = lock or _nspawn_lock_of(merged)
    if lock is not None:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    if _is_mounted(merged):
        proc = subprocess.run(["umount", str(merged)], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0 and _is_mounted(merged):
            proc = subprocess.run(["umount", "-l", str(merged)], capture_output=True, text=True, timeout=30)
            if proc.returncode != 0:
                errors.append(f"`umount {merged}`: {proc.stderr.strip()}")
    for leftover in NSPAWN_PROPAGATE.glob(netns + "*"):  # nspawn cannot remove it when /run is no tmpfs
        with contextlib.suppress(OSError):
            shutil.rmtree(leftover)
    slots = _slots_of(netns) + ([SLOTS_DIR / str(slot)] if slot is not None else [])
    for path in dict.fromkeys(slots):
        shutil.rmtree(path, ignore_errors=True)
    return errors


def start_host(
    name: str, private_ip: str, rootfs: Path | str, run_dir: Path | str, *, boot_timeout: float = BOOT_TIMEOUT
) -> HostHandle:
    """Boot a host named ``name`` carrying ``private_ip`` from an overlay of ``rootfs``; wait until ssh answers.

    Files (overlay upper/work/merged, console log) go in ``<run_dir>/iih-<hash>/``; the
    session key in ``run_dir``. On any failure everything created so far is undone and
    one line names the host, the command and the console log.
    """
    reason = runtime_available()
    if reason:
        raise EmbeddedHostError(f"host {name}: {reason}")
    rootfs = Path(rootfs)
    if not (rootfs / "usr").is_dir():
        raise EmbeddedHostError(f"host {name}: {rootfs} is not a root filesystem (build it with build_rootfs)")
    run_dir = Path(run_dir).resolve()
    ident = hashlib.sha256(f"{run_dir}\0{name}\0{os.getpid()}\0{time.time_ns()}".encode()).hexdigest()[:8]
    netns = PREFIX + ident
    directory = run_dir / netns
    key = session_key(run_dir)
    slot = _claim_slot(ident)
    host_ip, link_ip = _slot_addresses(slot)
    handle = HostHandle(name, private_ip, link_ip, netns, directory, directory / "console.log", key, _slot=slot)
    try:
        _prepare(handle, rootfs, host_ip)
        started = time.monotonic()
        machine = f"{netns}-{re.sub(r'[^A-Za-z0-9-]', '-', name)}"[:64].strip("-")
        cmd = [
            _which("systemd-nspawn") or "systemd-nspawn", "--boot", "--keep-unit", "--register=no", "--quiet",
            "--kill-signal=SIGRTMIN+4",
            f"--network-namespace-path={NETNS_DIR / netns}", "-D", str(handle.merged), f"--machine={machine}",
        ]
        (directory / "nspawn.cmd").write_text(" ".join(cmd) + "\n")
        with open(handle.console_log, "wb") as console:
            handle.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait_for_ssh(handle, boot_timeout, " ".join(cmd))
        handle.boot_seconds = time.monotonic() - started
        record_timing("host-boot", name, handle.boot_seconds)
    except BaseException:
        with contextlib.suppress(Exception):
            handle.stop()
        raise
    return handle


def _prepare(handle: HostHandle, rootfs: Path, host_ip: str) -> None:
    """Overlay mount with the session key inside; netns with the veth pair and both addresses."""
    what = f"host {handle.name}"
    for sub in ("upper", "work", "merged"):
        (handle.directory / sub).mkdir(parents=True, exist_ok=True)
    _run(["mount", "-t", "overlay", "overlay", "-o",
          f"lowerdir={rootfs},upperdir={handle.directory / 'upper'},workdir={handle.directory / 'work'}",
          str(handle.merged)], f"{what}: overlay mount")
    handle._mounted = True
    st = os.stat(handle.merged)
    handle.nspawn_lock = NSPAWN_LOCKS / f"inode-{st.st_dev}:{st.st_ino}"
    ssh_dir = handle.merged / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(handle.key.public_key.read_text())
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    (handle.merged / "etc" / "hostname").write_text(re.sub(r"[^A-Za-z0-9-]", "-", handle.name)[:63] + "\n")
    (handle.merged / "etc" / "immutable-infra-host").write_text(f"name={handle.name}\nprivate_ip={handle.private_ip}\n")
    ns, peer = handle.netns, "iic-" + handle.netns[len(PREFIX):]
    _run(["ip", "netns", "add", ns], f"{what}: network namespace")
    _run(["ip", "link", "add", ns, "type", "veth", "peer", "name", peer, "netns", ns], f"{what}: veth pair")
    _run(["ip", "addr", "add", f"{host_ip}/30", "dev", ns], f"{what}: link address")
    _run(["ip", "link", "set", ns, "up"], f"{what}: veth up")
    for cmd in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "set", peer, "name", "eth0"],
        ["ip", "addr", "add", f"{handle.link_ip}/30", "dev", "eth0"],
        ["ip", "addr", "add", f"{handle.private_ip}/32", "dev", "eth0"],
        ["ip", "link", "set", "eth0", "up"],
    ):
        _run(["ip", "-n", ns, *cmd[1:]], f"{what}: in namespace {ns}")


def _console_hint(console_log: Path) -> str:
    """What to do about a boot failure the console names, or ''."""
    with contextlib.suppress(OSError):
        if "Too many open files" in console_log.read_text(errors="replace"):
            return ("; the container's systemd ran out of inotify instances: raise fs.inotify.max_user_instances"
                    " (tools/install-host-runtime sets 8192)")
    return ""


def _wait_for_ssh(handle: HostHandle, timeout: float, command: str) -> None:
    """Until ``ssh root@<link ip> true`` succeeds, nspawn exits, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        assert handle.process is not None
        if handle.process.poll() is not None:
            raise EmbeddedHostError(
                f"host {handle.name}: `{command}` exited {handle.process.returncode} before ssh answered"
                f" (console log: {handle.console_log}){_console_hint(handle.console_log)}"
            )
        with contextlib.suppress(OSError), socket.create_connection((handle.link_ip, 22), timeout=1):
            try:
                proc = subprocess.run(handle.ssh_command("true"), capture_output=True, text=True, timeout=15,
                                      stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                last = "ssh true took over 15 s"
                continue
            if proc.returncode == 0:
                return
            last = proc.stderr.strip().splitlines()[-1:] and proc.stderr.strip().splitlines()[-1]
        time.sleep(0.2)
    raise EmbeddedHostError(
        f"host {handle.name}: ssh root@{handle.link_ip} did not answer within {timeout:g} s"
        f"{f' ({last})' if last else ''} (console log: {handle.console_log})"
    )


# -- leftovers --------------------------------------------------------------------------------


def leftovers(only: Iterable[str] = ()) -> list[str]:
    """What embedded hosts left on this machine, one line each, each naming its ``iih-<id>``: network namespaces,
    links, mounts, nspawn processes and container processes, nspawn directories, link-address claims.

    ``only``: keep the lines naming one of these (hosts' ``netns`` names), to look at one's own hosts
    while other sessions run theirs.
    """
    found: list[str] = []
    if NETNS_DIR.is_dir():
        found += [f"netns {p.name}" for p in sorted(NETNS_DIR.iterdir()) if p.name.startswith(PREFIX)]
    with contextlib.suppress(OSError):
        found += [f"link {p.name}" for p in sorted(Path("/sys/class/net").iterdir()) if p.name.startswith(PREFIX)]
    found += [f"mount {m}" for m in _mountpoints() if any(part.startswith(PREFIX) for part in Path(m).parts)]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            root = os.readlink(entry / "root")
            netns = re.search(rf"--network-namespace-path=/run/netns/({PREFIX}\w+)", cmdline)
            if "systemd-nspawn" in cmdline and netns:
                found.append(f"process {entry.name} systemd-nspawn of {netns.group(1)}")
            elif any(part.startswith(PREFIX) for part in Path(root).parts):
                found.append(f"process {entry.name} in {root}: {cmdline[:80]}")
    if NSPAWN_PROPAGATE.is_dir():
        found += [f"nspawn directory {p}" for p in sorted(NSPAWN_PROPAGATE.iterdir()) if p.name.startswith(PREFIX)]
    if SLOTS_DIR.is_dir():
        for p in sorted(SLOTS_DIR.iterdir()):
            owner = ""
            with contextlib.suppress(OSError):
                owner = (p / "owner").read_text().strip()
            found.append(f"link-address slot {p.name} of {owner or '?'}")
    names = list(only)
    return [line for line in found if any(name in line for name in names)] if names else found


class HostsLeftError(EmbeddedHostError):
    """stop_leftover_hosts could not stop everything: ``stopped`` what it did stop, ``remaining`` what is left,
    ``reason`` why nothing was tried (not root), or None when undoing failed."""

    def __init__(self, message: str, stopped: list[str], remaining: list[str], reason: str | None = None) -> None:
        super().__init__(message)
        self.stopped = stopped
        self.remaining = remaining
        self.reason = reason


_HOST_DIR = re.compile(rf"^{PREFIX}[0-9a-f]+$")


def host_directories(root: Path | str) -> list[Path]:
    """Every host directory (``iih-<id>``) under ``root``, at any depth, without descending into one."""
    found = []
    for top, dirs, _files in os.walk(root):
        for name in list(dirs):
            if _HOST_DIR.match(name):
                found.append(Path(top) / name)
                dirs.remove(name)
    return sorted(found)


def _host_label(directory: Path) -> str:
    """``iih-<id> (<name>)``: the name (an instance id in a group) from the file start_host wrote into the overlay."""
    for path in (directory / "upper" / "etc" / "immutable-infra-host", directory / "merged" / "etc" / "immutable-infra-host"):
        with contextlib.suppress(OSError):
            found = re.search(r"^name=(.+)$", path.read_text(), re.M)
            if found:
                return f"{directory.name} ({found.group(1).strip()})"
    return directory.name


def _stop_reason() -> str | None:
    if os.name != "posix" or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "stopping embedded hosts needs root"
    if _which("ip") is None:
        return "stopping embedded hosts needs ip (iproute2): run tools/install-host-runtime"
    return None


def stop_leftover_hosts(root: Path | str) -> list[str]:
    """Stop every embedded host whose directory is under ``root`` (a run's folder, say), from what is on the machine
    alone (no HostHandle: the session that started them may have been killed). Returns ``iih-<id> (<name>)`` per
    host that had something left; [] when nothing was there. Calling it again is fine.

    Per host: its nspawn (found by ``--network-namespace-path`` in its cmdline) gets SIGTERM, then SIGKILL after
    POWEROFF_TIMEOUT, as does any process whose root is its ``merged``; then what HostHandle.stop undoes. Raises
    HostsLeftError (``stopped``, ``remaining``) naming what is left, when this is not root or undoing failed.
    """
    stopped: list[str] = []
    remaining: list[str] = []
    reason = _stop_reason()
    for directory in host_directories(root):
        netns = directory.name
        merged = directory.resolve() / "merged"
        there = leftovers(only=[netns])
        if not there:
            continue
        if reason:
            remaining += there
            continue
        errors = _undo_host(netns, merged)
        left = leftovers(only=[netns])
        if left or errors:
            remaining += left or errors
        else:
            stopped.append(_host_label(directory))
    if remaining:
        why = f" ({reason})" if reason else ""
        raise HostsLeftError(f"embedded hosts left under {root}{why}: {'; '.join(remaining)}", stopped, remaining, reason)
    return stopped


def assert_no_leftovers(before: Iterable[str] = ()) -> None:
    """Fail the calling test (no traceback) naming what embedded hosts left, except what was there ``before``."""
    import pytest

    __tracebackhide__ = True
    known = set(before)
    left = [item for item in leftovers() if item not in known]
    if left:
        pytest.fail(f"embedded hosts left behind: {'; '.join(left)}", pytrace=False)


# -- playbooks --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PlaybookRun:
    """One ansible-playbook run on one host: seconds taken, the recap counters, where the log is."""

    elapsed: float
    recap: dict[str, int]
    log: Path


def apply_playbook(
    hosts: HostHandle | Sequence[HostHandle], playbook_path: Path | str, extra_vars: dict | None = None, *,
    role: str | None = None, timeout: float = 600.0,
) -> PlaybookRun:
    """Run ``ansible-playbook`` against embedded hosts (one inventory group named after the role); fail with one line.

    Each host's inventory line has ``ansible_host`` (its link address), the session key,
    ``ansible_python_interpreter=/usr/bin/python3`` and the host variables ``private_ip``
    (and ``instance_id`` when known). The hosts are offline: whatever the playbook
    installs must be baked into the image (``apt: state=present`` on a baked package is
    a no-op and works). ``recap`` sums the PLAY RECAP counters of all hosts.
    """
    handles = [hosts] if isinstance(hosts, HostHandle) else list(hosts)
    if not handles:
        raise EmbeddedHostError(f"ansible-playbook {Path(playbook_path).name}: no hosts given")
    names = ", ".join(h.name for h in handles)
    group = re.sub(r"[^A-Za-z0-9_]", "_", role or "embedded")
    work = handles[0].directory.parent / f"ansible-{group}-{handles[0].netns}"
    work.mkdir(parents=True, exist_ok=True)
    lines = [f"[{group}]"]
    for h in handles:
        host_vars = f" instance_id={h.instance_id}" if h.instance_id else ""
        lines.append(
            f"{re.sub(r'[^A-Za-z0-9_.-]', '-', h.name)} ansible_host={h.link_ip} ansible_user=root "
            f"ansible_ssh_private_key_file={h.key.private_key} ansible_ssh_common_args='-F {h.key.ssh_config}' "
            f"ansible_python_interpreter=/usr/bin/python3 private_ip={h.private_ip}{host_vars}"
        )
    inventory = work / "inventory.ini"
    inventory.write_text("\n".join(lines) + "\n")
    return run_playbook(inventory, playbook_path, work, f"host {names}", extra_vars, timeout=timeout, pipelining=True)


def apply_role_playbooks(by_role: Mapping[str, Sequence[HostHandle]], playbooks_dir: Path | str,
                         roles: Mapping[str, Any], extra_vars: dict | None = None) -> dict[str, PlaybookRun]:
    """Each role's playbook on its hosts (one ansible-playbook run per role), the roles side by side (the runs
    mostly wait on the hosts); role -> the run. Failures raise after every run has ended (see
    :func:`_raise_joined`): one :class:`EmbeddedHostError` naming each failed run."""
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(by_role)))) as pool:
        futures = {role: pool.submit(apply_playbook, handles, Path(playbooks_dir) / roles[role].playbook, extra_vars,
                                     role=role) for role, handles in by_role.items()}
    _raise_joined(f.exception() for f in futures.values())
    return {role: future.result() for role, future in futures.items()}


def _raise_joined(errors: Iterable[BaseException | None]) -> None:
    """Raise the errors of side-by-side work, after all of it ended: an error that is not a tool's (a bug, an
    interrupt) as itself, else one :class:`EmbeddedHostError` naming every failure."""
    failed = [e for e in errors if e is not None]
    for error in failed:
        if not isinstance(error, ToolError):
            raise error
    if failed:
        raise EmbeddedHostError("; ".join(map(str, failed)))


def run_playbook(
    inventory: Path, playbook_path: Path | str, work: Path, who: str, extra_vars: dict | None = None, *,
    limit: str | None = None, host_key_checking: bool = False, timeout: float = 600.0,
    error: type[ToolError] = EmbeddedHostError, pipelining: bool = False,
) -> PlaybookRun:
    """``ansible-playbook -i inventory playbook [--limit limit]`` with its own empty ansible.cfg in ``work``; the log
    goes there too. A failure raises ``error`` with one line: ``who``, the playbook, the failed task's message, the log.

    ``host_key_checking=False`` (embedded hosts: throwaway keys) lets Ansible skip the check; True leaves it to
    the ssh options the inventory names (``StrictHostKeyChecking accept-new`` in a run's known_hosts file).
    ``pipelining``: Ansible's ssh pipelining (one ssh round trip per task instead of several); embedded hosts
    run it (our image, root, no ``requiretty``); real hosts keep Ansible's default.
    """
    import json

    from immutable_infra.checks.roles import find_ansible_playbook

    playbook_path = Path(playbook_path).resolve()
    if not playbook_path.is_file():
        raise error(f"{who}: playbook {playbook_path} not found")
    exe = find_ansible_playbook()
    if exe is None:
        raise error(f"{who}: ansible-playbook not found: pip install 'ansible-core>=2.15'")
    work.mkdir(parents=True, exist_ok=True)
    config = work / "ansible.cfg"  # ours, empty: an ansible.cfg in the working directory is not read
    config.write_text("[defaults]\n")
    log = work / f"{playbook_path.stem}.log"
    cmd = [exe, "-i", str(inventory), str(playbook_path)]
    if limit:
        cmd += ["--limit", limit]
    if extra_vars:
        cmd += ["--extra-vars", json.dumps(extra_vars)]
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_HOST_KEY_CHECKING": "True" if host_key_checking else "False",
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        **({"ANSIBLE_PIPELINING": "True"} if pipelining else {}),
    }
    started = time.monotonic()
    try:
        with open(log, "w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        raise error(f"{who}: ansible-playbook {playbook_path.name} timed out after {timeout:.0f} s (log: {log})") from None
    elapsed = time.monotonic() - started
    record_timing("playbook", playbook_path.stem, elapsed, rc)
    text = log.read_text(errors="replace")
    recap: dict[str, int] = {}
    if "PLAY RECAP" in text:
        for line in re.findall(r"^\S+\s*:\s*(ok=\d+.*)$", text.split("PLAY RECAP")[-1], re.M):
            for k, v in re.findall(r"(\w+)=(\d+)", line):
                recap[k] = recap.get(k, 0) + int(v)
    if rc != 0:
        failed = re.findall(r"^(?:fatal: |\[?ERROR).*$", text, re.M)
        detail = failed[-1][:300] if failed else f"exit {rc}"
        raise error(f"{who}: ansible-playbook {playbook_path.name}: {detail} (log: {log})")
    return PlaybookRun(elapsed, recap, log)


# -- a group's instances ----------------------------------------------------------------------


@dataclasses.dataclass
class GroupHosts:
    """The embedded hosts of a group's running instances, each configured by its role's playbook.

    ``hosts``: instance id -> host; ``playbooks``: role -> the run that configured its hosts;
    ``unconfigured``: instance id -> why no playbook was applied (no Role tag, a role the
    catalog does not know: the roles check reports those as findings). ``stop()`` stops all.
    """

    hosts: dict[str, HostHandle] = dataclasses.field(default_factory=dict)
    roles: dict[str, str] = dataclasses.field(default_factory=dict)
    playbooks: dict[str, PlaybookRun] = dataclasses.field(default_factory=dict)
    unconfigured: dict[str, str] = dataclasses.field(default_factory=dict)

    def stop(self) -> None:
        errors = []
        for handle in self.hosts.values():
            try:
                handle.stop()
            except EmbeddedHostError as exc:
                errors.append(str(exc))
        if errors:
            raise EmbeddedHostError("; ".join(errors))

    def __enter__(self) -> GroupHosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def running_instances(described: Mapping | Iterable[Mapping]) -> list[dict]:
    """Running instances from a describe_instances response (or its instances), in launch order."""
    if isinstance(described, Mapping):
        instances = [i for r in described.get("Reservations", []) for i in r.get("Instances", [])]
    else:
        instances = list(described)
    return [dict(i) for i in instances if i.get("State", {}).get("Name", "running") == "running"]


def embedded_hosts_for_group(
    described: Mapping | Iterable[Mapping], roles: Mapping[str, Any], playbooks_dir: Path | str,
    run_dir: Path | str, *, template: str = "debian12-base", cache_dir: Path | str | None = None,
    extra_vars: dict | None = None,
) -> GroupHosts:
    """One embedded host per running instance (its private IP, named by its instance id), each role's playbook
    applied to its hosts in one ansible-playbook run.

    ``described``: describe_instances' response (or its instances: InstanceId,
    PrivateIpAddress, Tags, State); ``roles``: the roles catalog
    (``immutable_infra.roles.load_roles``; each role's ``playbook`` is found in
    ``playbooks_dir``). On any error the hosts started so far are stopped before it is raised.
    """
    rootfs = build_rootfs(template, cache_dir)
    group = GroupHosts()
    booted: dict[str, HostHandle] = {}

    def boot(instance_id: str, ip: str) -> None:
        handle = start_host(instance_id, ip, rootfs, run_dir)
        handle.instance_id = instance_id
        booted[instance_id] = handle  # at once, so that a failure elsewhere still stops it

    try:
        running = running_instances(described)
        for instance in running:
            if not instance.get("PrivateIpAddress"):
                raise EmbeddedHostError(f"instance {instance.get('InstanceId', '?')}: no PrivateIpAddress in "
                                        "describe_instances")
        session_key(run_dir)  # once, before the hosts boot side by side
        ids = [str(i.get("InstanceId", "?")) for i in running]
        # The hosts boot at the same time, and the roles' playbooks run at the same time (mostly waiting).
        with ThreadPoolExecutor(max_workers=max(1, min(4, len(running)))) as pool:
            booting = [pool.submit(boot, i, str(instance["PrivateIpAddress"])) for i, instance in zip(ids, running)]
        group.hosts.update((i, booted[i]) for i in ids if i in booted)  # in launch order
        _raise_joined(f.exception() for f in booting)
        for instance_id, instance in zip(ids, running):
            role = tags_of(instance.get("Tags")).get("Role")
            if role is None:
                group.unconfigured[instance_id] = "no Role tag"
            elif role not in roles:
                group.unconfigured[instance_id] = f"role {role!r} is not in the roles catalog"
            else:
                group.roles[instance_id] = role
        by_role = {role: [group.hosts[i] for i, r in group.roles.items() if r == role]
                   for role in sorted(set(group.roles.values()))}
        group.playbooks.update(apply_role_playbooks(by_role, playbooks_dir, roles, extra_vars))
    except BaseException:
        group.hosts.update((i, h) for i, h in booted.items() if i not in group.hosts)
        with contextlib.suppress(EmbeddedHostError):
            group.stop()
        raise
    return group
