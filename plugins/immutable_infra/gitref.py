"""Groups as they were at a git revision, for the merge gate (``--base-ref``)."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from immutable_infra.errors import ToolError


class GitRefError(ToolError):
    """The base revision cannot be read; the message says why and how to fix it."""


def _git(repo: Path, *args: str) -> bytes:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout
    except FileNotFoundError:
        raise GitRefError("--base-ref needs git on the PATH") from None
    except subprocess.CalledProcessError as exc:
        raise GitRefError(f"git {' '.join(args)} failed in {repo}: {exc.stderr.decode().strip()}") from None


def export_groups(groups_dir: Path, ref: str, target: Path) -> Path:
    """Extract the groups folder and its siblings (modules, images) at ``ref``; return the exported groups folder."""
    groups_dir = groups_dir.resolve()
    top = Path(_git(groups_dir, "rev-parse", "--show-toplevel").decode().strip())
    base = groups_dir.parent.relative_to(top)
    try:
        _git(top, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except GitRefError:
        raise GitRefError(f"--base-ref {ref}: no such revision in {top}; give a branch, tag or commit (e.g. origin/main)") from None
    archive = _git(top, "archive", "--format=tar", ref, "--", str(base) if str(base) != "." else ".")
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    exported = target / base / groups_dir.name
    if not exported.is_dir():
        raise GitRefError(f"--base-ref {ref}: {groups_dir.relative_to(top)} does not exist at that revision")
    return exported
