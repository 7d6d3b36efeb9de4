#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Local receivers for the alert delivery tests: an HTTP server that checks each signature
scheme the way its vendor does (QuartzFlow webhooks and callbacks, DingTalk, Feishu) and an
SMTP server (aiosmtpd) with STARTTLS and AUTH, and one with TLS from the first byte. Every request is appended to a JSON-lines file.

Prints one line, `http=<port> https=<port> smtp=<port> smtps=<port> cert=<path>`, then serves until stdin closes or
SIGTERM. Paths (the last segment names the test's receiver):
  /webhook/<name>        X-QuartzFlow-Signature: sha256=hex(HMAC(secret, ts + "." + body)),
                         X-QuartzFlow-Timestamp within 5 minutes; 200, else 401
  /dingtalk/<name>       ?timestamp=<ms>&sign=urlencode(base64(HMAC(secret, ts + "\\n" + secret)))
                         within 1 h; {"errcode":0}, else {"errcode":310000} (both HTTP 200)
  /feishu/<name>         body timestamp (s) and sign = base64(HMAC(key=ts + "\\n" + secret, ""));
                         {"code":0}, else {"code":19021} (both HTTP 200)
  /slack/<name>          200 "ok"        /wecom/<name>  200 {"errcode":0}
  /pagerduty/<name>      202 {"status":"success"}
  /flaky/<n>/<name>      503 for the first n requests, then 200
  /reject/<name>         400
  /slow-once/<s>/<name>  the first request answers after s seconds, the others at once
  /slow/<s>/<name>       every request answers after s seconds
  /ratelimit/<name>      200 {"errcode":130101} (DingTalk's "send too fast")
"""
import argparse
import base64
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

ARGS = None
LOCK = threading.Lock()
COUNTS = {}
IN_PROGRESS = {}  # requests being answered, by path


def record(entry):
    with LOCK:
        with open(ARGS.records, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")


def count(key):
    with LOCK:
        COUNTS[key] = COUNTS.get(key, 0) + 1
        return COUNTS[key]


def verify_webhook(headers, body):
    timestamp = headers.get("X-QuartzFlow-Timestamp", "")
    signature = headers.get("X-QuartzFlow-Signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return False, "timestamp missing or more than 5 minutes off"
    expected = "sha256=" + hmac.new(ARGS.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return False, "signature mismatch"
    return True, ""


def verify_dingtalk(query):
    timestamp = query.get("timestamp", [""])[0]
    sign = query.get("sign", [""])[0]  # parse_qs has URL-decoded it
    if not timestamp.isdigit() or abs(time.time() * 1000 - int(timestamp)) > 3600 * 1000:
        return False, "timestamp missing or more than 1 h off"
    string_to_sign = "{}\n{}".format(timestamp, ARGS.dingtalk_secret)
    expected = base64.b64encode(
        hmac.new(ARGS.dingtalk_secret.encode(), string_to_sign.encode(), hashlib.sha256).digest()).decode()
    return (True, "") if hmac.compare_digest(expected, sign) else (False, "sign not match")


def verify_feishu(body):
    try:
        message = json.loads(body)
    except ValueError:
        return False, "body is not JSON"
    timestamp = str(message.get("timestamp", ""))
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 3600:
        return False, "timestamp missing or more than 1 h off"
    key = "{}\n{}".format(timestamp, ARGS.feishu_secret).encode()
    expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    return (True, "") if hmac.compare_digest(expected, str(message.get("sign", ""))) else (False, "sign match fail")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        url = urllib.parse.urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        kind = parts[0] if parts else ""
        query = urllib.parse.parse_qs(url.query)
        verified, why = None, ""
        status, reply, delay = 200, "{}", 0
        if kind == "webhook":
            verified, why = verify_webhook(self.headers, body)
            status, reply = (200, '{"ok":true}') if verified else (401, '{"error":"%s"}' % why)
        elif kind == "dingtalk":
            verified, why = verify_dingtalk(query)
            reply = '{"errcode":0,"errmsg":"ok"}' if verified else '{"errcode":310000,"errmsg":"%s"}' % why
        elif kind == "feishu":
            verified, why = verify_feishu(body)
            reply = '{"code":0,"msg":"success","data":{}}' if verified else '{"code":19021,"msg":"%s"}' % why
        elif kind == "slack":
            reply = "ok"
        elif kind == "wecom":
            reply = '{"errcode":0,"errmsg":"ok"}'
        elif kind == "pagerduty":
            status, reply = 202, '{"status":"success","message":"Event processed"}'
        elif kind == "flaky":
            n = count(url.path)
            status = 503 if n <= int(parts[1]) else 200
        elif kind == "reject":
            status, reply = 400, '{"error":"bad request"}'
        elif kind == "slow-once":
            delay = float(parts[1]) if count(url.path) == 1 else 0
        elif kind == "slow":
            delay = float(parts[1])
        elif kind == "ratelimit":
            reply = '{"errcode":130101,"errmsg":"send too fast"}'
        else:
            status = 404
        with LOCK:
            IN_PROGRESS[url.path] = IN_PROGRESS.get(url.path, 0) + 1
            concurrent = IN_PROGRESS[url.path]
        record({"path": url.path, "query": url.query, "headers": dict(self.headers.items()),
                "body": body.decode("utf-8", "replace"), "status": status, "verified": verified, "why": why,
                "concurrent": concurrent})
        time.sleep(delay)  # recorded first: a client that gave up still sees its request counted
        with LOCK:
            IN_PROGRESS[url.path] -= 1
        try:
            self.answer(status, reply)
        except OSError:
            pass  # the client gave up (timeout tests)


class SmtpHandler:
    async def handle_DATA(self, server, session, envelope):
        record({"smtp": True, "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                "data": envelope.original_content.decode("utf-8", "replace"),
                "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
                "authenticated": bool(session.authenticated)})
        return "250 2.0.0 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == ARGS.smtp_user.encode()
          and auth_data.password == ARGS.smtp_password.encode())
    # handled=False: aiosmtpd then answers 535 itself (by default it leaves the answer to us).
    return AuthResult(success=ok, handled=False)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    global ARGS
    # aiosmtpd 1.4 logs a deprecation of its own (Session.login_data) at each login.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", required=True)
    parser.add_argument("--dir", required=True, help="where the self-signed certificate is made")
    parser.add_argument("--secret", default="webhook-secret")
    parser.add_argument("--dingtalk-secret", default="SECdingtalk")
    parser.add_argument("--feishu-secret", default="feishu-secret")
    parser.add_argument("--smtp-user", default="alerts")
    parser.add_argument("--smtp-password", default="smtp-password")
    ARGS = parser.parse_args()

    cert, key = os.path.join(ARGS.dir, "cert.pem"), os.path.join(ARGS.dir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, daemon=True).start()
    # The same endpoints over HTTPS, with the self-signed certificate (clients pass it as CA).
    https = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    https.daemon_threads = True
    https.socket = tls.wrap_socket(https.socket, server_side=True)
    threading.Thread(target=https.serve_forever, daemon=True).start()
    smtp_port = free_port()
    smtp = Controller(SmtpHandler(), hostname="127.0.0.1", port=smtp_port, tls_context=tls, require_starttls=True,
                      authenticator=authenticator, auth_required=True, auth_require_tls=True)
    smtp.start()
    # TLS from the first byte (SMTPS, port 465 style), AUTH too.
    smtps_port = free_port()
    # The login is inside TLS from the start; aiosmtpd only counts STARTTLS as TLS, so its
    # own check is off and so is its warning about that.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    smtps = Controller(SmtpHandler(), hostname="127.0.0.1", port=smtps_port, ssl_context=tls,
                       authenticator=authenticator, auth_required=True, auth_require_tls=False)
    smtps.start()

    print("http={} https={} smtp={} smtps={} cert={}".format(http.server_address[1], https.server_address[1], smtp_port,
                                                            smtps_port, cert), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        sys.stdin.read()  # until the test closes it (or dies)
    finally:
        smtps.stop()
        smtp.stop()
        https.shutdown()
        http.shutdown()


if __name__ == "__main__":
    main()
