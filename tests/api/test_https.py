# SPDX-License-Identifier: Apache-2.0
# The admin API over HTTPS (admin_tls): the certificate verifies against the cluster CA, the
# session cookie is Secure, and plain HTTP to the TLS port gets no answer.
import json
import os
import socket
import ssl
import subprocess
import urllib.request

from conftest import ADMIN_PASSWORD, Cluster, wait_for


def test_admin_api_over_https_with_a_secure_cookie():
    c = Cluster(os.environ["QF_BUILD_DIR"])
    with open(c.config, "a") as f:
        f.write("admin_tls: {cert_file: certs/coordinator-127.0.0.1.pem, key_file: certs/coordinator-127.0.0.1.key}\n")
    base = f"https://127.0.0.1:{c.admin_port}"
    context = ssl.create_default_context(cafile=os.path.join(c.dir, "certs", "ca.pem"))
    try:
        coordinator = c.start("coordinator", [c.coordinator_bin, "--config", c.config])

        def ready():
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2, context=context) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(ready, 30, "/readyz over HTTPS")
        req = urllib.request.Request(base + "/api/v1/auth/login", method="POST",
                                     data=json.dumps({"username": "admin", "password": ADMIN_PASSWORD}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10, context=context) as r:
            assert r.status == 200
            assert "; Secure" in r.headers["Set-Cookie"]
            token = json.loads(r.read())["data"]["session_token"]
        req = urllib.request.Request(base + "/api/v1/tasks", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10, context=context) as r:
            assert json.loads(r.read())["code"] == 0
        # Someone else's CA: the handshake fails on the client's side.
        other = ssl.create_default_context()
        try:
            urllib.request.urlopen(base + "/healthz", timeout=5, context=other)
            raise AssertionError("a certificate of an unknown CA was accepted")
        except urllib.error.URLError as e:
            assert isinstance(e.reason, ssl.SSLCertVerificationError), e
        # Plain HTTP to the TLS port: no HTTP answer.
        with socket.create_connection(("127.0.0.1", c.admin_port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = s.recv(100)
            except (ConnectionResetError, socket.timeout):
                answer = b""
            assert not answer.startswith(b"HTTP/1.1 200")
    finally:
        c.stop()
        assert coordinator.returncode == 0, c.log("coordinator")[-2000:]
