"""Hosts: where a package list comes from (a recorded manifest today, a live host through testinfra later).

The parity checks compare package lists read from the package manifests
Packer's provisioners wrote; they never import this module. This is the seam
for comparing a *running* host with its image: anything with a
``packages()`` method that returns ``{name: (version, architecture)}`` is a
:class:`PackageSource`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from immutable_infra.images import DPKG_COMMAND, RPM_COMMAND, Packages, parse_packages, read_manifest_file


@runtime_checkable
class PackageSource(Protocol):
    """Something that can list installed packages: name -> (version, architecture)."""

    def packages(self) -> Packages: ...


class ManifestPackages:
    """Packages from a recorded package manifest (``<build>.packages.txt``)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ManifestPackages({str(self.path)!r})"

    def packages(self) -> Packages:
        text = read_manifest_file(self.path, "package manifest", f"write it with {DPKG_COMMAND} or {RPM_COMMAND}")
        return parse_packages(text, self.path)


class HostPackagesError(RuntimeError):
    """A live host could not list its packages (a tool problem, not a finding)."""


class TestinfraPackages:
    """Packages of a live host, through testinfra (``local://``, ``ssh://user@host``, ``docker://name``...).

    Runs ``dpkg-query`` where it exists, else ``rpm``, with the same format
    as the package manifests, so the two compare directly.
    """

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(self, host_url: str, **kwargs: Any) -> None:
        self.host_url = host_url
        self._kwargs = kwargs

    def __repr__(self) -> str:
        return f"TestinfraPackages({self.host_url!r})"

    def packages(self) -> Packages:
        import testinfra

        host = testinfra.get_host(self.host_url, **self._kwargs)
        if host.exists("dpkg-query"):
            command = DPKG_COMMAND
        elif host.exists("rpm"):
            command = RPM_COMMAND
        else:
            raise HostPackagesError(f"{self.host_url}: neither dpkg-query nor rpm found; cannot list packages")
        result = host.run(command)
        if result.rc != 0:
            raise HostPackagesError(
                f"{self.host_url}: {command} exited {result.rc}: {result.stderr.strip()[-500:]}"
            )
        return parse_packages(result.stdout, f"{self.host_url} ({command})")
