"""HTTPS served directly, --public-url behind a proxy, and the warning for clear-text binds."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pathlib
import ssl
import subprocess
import sys

import httpx
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.support.server import ROOT, ServerProcess, free_port
from tests.support.worker import auth, create_session, poll, register

from tether.protocol.work_secret import decode_work_secret

pytestmark = pytest.mark.anyio


def self_signed(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_https_and_wss_directly(tmp_path: pathlib.Path) -> None:
    cert, key = self_signed(tmp_path)
    ctx = ssl.create_default_context(cafile=str(cert))
    with ServerProcess(tmp_path / "data", args=("--tls-cert", str(cert), "--tls-key", str(key)),
                       scheme="https", verify=ctx) as srv:
        token = srv.token()
        assert srv.login_link and srv.login_link.startswith("https://")
        async with httpx.AsyncClient(base_url=srv.url, timeout=15, verify=ctx) as client:
            env = await register(client, token)
            sid = await create_session(client, token, env["environment_id"])
            item = await poll(client, env)
            assert item is not None
            assert decode_work_secret(item["secret"]).api_base_url.startswith("https://")
        async with websockets.connect(f"{srv.ws_url}/v1/sessions/ws/{sid}/subscribe", ssl=ctx,
                                      additional_headers=auth(token)) as ws:
            await ws.send('{"type":"keep_alive"}')
            assert "keep_alive" in str(await ws.recv())


async def test_public_url_is_what_clients_are_told(tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path, args=("--public-url", "https://tether.example.test")) as srv:
        assert srv.login_link and srv.login_link.startswith("https://tether.example.test/login?token=")
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            env = await register(client, token)
            await create_session(client, token, env["environment_id"])
            item = await poll(client, env)
            assert item is not None
            assert decode_work_secret(item["secret"]).api_base_url == "https://tether.example.test"
            r = await client.post("/oauth/device/code", json={})
            assert r.json()["verification_uri"] == "https://tether.example.test/device"


def test_clear_text_bind_beyond_loopback_warns(tmp_path: pathlib.Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether.cli.main", "server", "--host", "0.0.0.0", "--port", str(free_port()),
         "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=dict(os.environ),
    )
    with proc:  # leaving it closes the pipes and waits
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline().decode()
            assert "warning" in first and "TLS" in first
        finally:
            proc.terminate()
            proc.wait(10)
