"""Sandbox: the moto server starts on loopback and stops; the provider mirror and CLI config; endpoint checks."""

from __future__ import annotations

import os
import socket
import zipfile

import pytest

from immutable_infra.sandbox import (
    MotoServer, Sandbox, SandboxError, check_endpoint, ensure_mirror, provider_zip, write_cli_config,
)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_moto_server_listens_on_loopback_only_and_stops():
    server = MotoServer().start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert server._server._server.server_address[0] == "127.0.0.1"
        assert port_open(server.port)
        check_endpoint(server.url)
    finally:
        server.stop()
    assert not port_open(server.port)


def test_embedded_sandbox_gives_clients_bound_to_its_endpoint(tmp_path):
    sandbox = Sandbox.embedded(tmp_path)
    try:
        ec2 = sandbox.client("ec2", "cn-north-1")
        assert ec2.meta.endpoint_url == sandbox.endpoint
        vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]
        assert vpc["VpcId"].startswith("vpc-")
        env = sandbox.terraform_env()
        assert env["TF_CLI_CONFIG_FILE"].endswith("terraformrc-offline")
        assert env["TF_PLUGIN_CACHE_DIR"] == ""  # offline: init symlinks the unpacked mirror, no shared cache
        settings = sandbox.provider_settings()
        assert settings["endpoints"]["ec2"] == sandbox.endpoint and "elbv2" not in settings["endpoints"]
    finally:
        sandbox.stop()
    assert not port_open(int(sandbox.endpoint.rsplit(":", 1)[1]))


def test_mirror_is_laid_once_unpacked_and_named_by_the_cli_config(tmp_path):
    mirror = ensure_mirror(tmp_path)
    binaries = [p for p in mirror.rglob("*") if p.is_file()]
    assert [b.name for b in binaries] == ["terraform-provider-aws_v3.39.0_x5"]
    assert binaries[0].relative_to(mirror).parts[:-1] == (
        "registry.terraform.io", "hashicorp", "aws", "3.39.0", "linux_amd64")
    assert os.access(binaries[0], os.X_OK)
    mtime = binaries[0].stat().st_mtime_ns
    config = write_cli_config(tmp_path, offline=True).read_text()
    # No shared plugin cache offline: Terraform's is not safe under concurrent inits (hashicorp/terraform#31964).
    assert f'path    = "{mirror}"' in config and "plugin_cache_dir" not in config
    assert ensure_mirror(tmp_path) == mirror and binaries[0].stat().st_mtime_ns == mtime
    assert not any((tmp_path / "mirror-staging").iterdir())


def test_concurrent_sessions_lay_the_mirror_once_and_whole(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        mirrors = list(pool.map(lambda _: ensure_mirror(tmp_path), range(4)))
    assert len(set(mirrors)) == 1
    binary, = [p for p in mirrors[0].rglob("*") if p.is_file()]
    with zipfile.ZipFile(provider_zip()) as archive:
        assert binary.stat().st_size == archive.getinfo(binary.name).file_size


def test_online_cli_config_has_no_mirror(tmp_path):
    assert "filesystem_mirror" not in write_cli_config(tmp_path, offline=False).read_text()


def test_endpoint_that_does_not_answer_is_named_with_the_fix():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SandboxError, match=rf"the AWS endpoint http://127.0.0.1:{port} does not answer .*drop --aws-endpoint"):
        check_endpoint(f"http://127.0.0.1:{port}", timeout=2)
