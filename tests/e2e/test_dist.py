"""`make dist`'s binary — the file a user ships — is what the README says: static (no program interpreter, no shared
library), stripped, under 60 MB, with a matching `.sha256`; and it serves `examples/weir.toml` with every example
plugin (so wasmtime works in it), streams through the official SDKs, and reaches an HTTPS upstream (so rustls and
the system's certificate store work in it: a static binary must find the certificates itself).

`make test` builds it and sets WEIR_DIST_BIN; without that variable (pytest run by hand) these tests are skipped."""

import hashlib
import os
import socket
import ssl
import struct
import subprocess
import threading
from pathlib import Path

import openai
import pytest

from conftest import (UPSTREAM_KEY, Mock, anthropic_client, example_config, free_port, gateway_config,
                      openai_client, wait_http)

DIST = os.environ.get("WEIR_DIST_BIN")
pytestmark = pytest.mark.skipif(not DIST, reason="WEIR_DIST_BIN is not set (make test sets it)")

PT_INTERP, PT_DYNAMIC, DT_NEEDED = 3, 2, 1


def elf_facts(path):
    """(has a program interpreter, shared libraries needed, has a symbol table) of a 64-bit little-endian ELF file."""
    data = Path(path).read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit little-endian ELF file"
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    interp, needed = False, 0
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == PT_INTERP:
            interp = True
        if p_type == PT_DYNAMIC:
            for off in range(p_offset, p_offset + p_filesz, 16):
                tag, _val = struct.unpack_from("<qQ", data, off)
                needed += tag == DT_NEEDED
    SHT_SYMTAB = 2
    symtab = any(struct.unpack_from("<II", data, shoff + i * shentsize)[1] == SHT_SYMTAB for i in range(shnum))
    return interp, needed, symtab


def test_dist_binary_is_static_stripped_small_and_checksummed():
    path = Path(DIST)
    interp, needed, symtab = elf_facts(path)
    assert not interp, "the binary names a program interpreter (dynamically linked)"
    assert needed == 0, f"the binary needs {needed} shared libraries"
    assert not symtab, "the binary is not stripped"
    assert path.stat().st_size < 60 * 1024 * 1024, path.stat().st_size
    digest, name = Path(str(path) + ".sha256").read_text().split()
    assert name == path.name
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def dist_example(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    config, port = example_config(tmp)
    log = tmp / "weir.log"
    proc = subprocess.Popen([DIST, "serve", "--config", str(config)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", proc=proc, log=log)
    wait_http(url + "/readyz", proc=proc, log=log)
    yield url
    proc.terminate()
    assert proc.wait(10) == 0, log.read_text()[-3000:]


def test_dist_binary_serves_the_example_through_the_sdks(dist_example):
    client = openai_client(dist_example, api_key="sk-weir-demo")
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Hello"}], stream=True) if c.choices)
    assert text.startswith("Hello from the Weir mock")
    with anthropic_client(dist_example, api_key="sk-weir-demo").messages.stream(
            model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "Hello"}]) as s:
        assert "".join(s.text_stream).startswith("Hello from the Weir mock")
    # The redact plugin rewrites the streamed answer: the Wasm runtime works in the static build.
    deltas = '["Mail jane", ".doe@exa", "mple.com or call +1 415", " 555 0132."]'
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "Hello"}], stream=True,
        extra_headers={"x-mock-deltas": deltas}) if c.choices)
    assert text == "Mail [EMAIL] or call [PHONE]."


class TlsRelay:
    """A TLS endpoint for `localhost` (certificate from a private CA) that relays each connection to a plain-HTTP
    port: the mock upstream, behind HTTPS."""

    def __init__(self, tmp, target_port):
        ca_key, ca, key, csr, cert = (tmp / n for n in ("ca.key", "ca.pem", "leaf.key", "leaf.csr", "leaf.pem"))
        run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
            "-subj", "/CN=Weir test CA", "-keyout", str(ca_key), "-out", str(ca))
        run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr))
        ext = tmp / "leaf.ext"
        ext.write_text("subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                       "extendedKeyUsage=serverAuth\n")
        run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "1",
            "-extfile", str(ext), "-out", str(cert))
        self.ca = ca
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.target_port = target_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handshakes = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.relay, args=(conn,), daemon=True).start()

    def relay(self, conn):
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()
            return
        self.handshakes += 1
        plain = socket.create_connection(("127.0.0.1", self.target_port))

        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(plain, tls), daemon=True).start()
        pump(tls, plain)

    def close(self):
        self.sock.close()


def start_dist(tmp, name, config_text, env):
    config, log = tmp / f"{name}.toml", tmp / f"{name}.log"
    config.write_text(config_text)
    return subprocess.Popen([DIST, "serve", "--config", str(config)], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=env), log


def test_dist_binary_reaches_an_https_upstream_and_verifies_it(tmp_path):
    """Trusted CA: the answer streams. Another CA trusted instead: the same upstream is refused (a verifier that
    accepted anything would pass the first half)."""
    mock = Mock(tmp_path)
    relay = TlsRelay(tmp_path, mock.port)
    other = tmp_path / "other"
    other.mkdir()
    other_ca = TlsRelay(other, mock.port)
    other_ca.close()
    procs = []
    try:
        for name, ca in (("trusted", relay.ca), ("untrusted", other_ca.ca)):
            port = free_port()
            text = gateway_config(mock.port, port, kv=f'path = "{tmp_path / (name + "-data")}"').replace(
                f"http://127.0.0.1:{mock.port}/v1", f"https://localhost:{relay.port}/v1")
            # Only this CA is trusted: the binary's verifier reads SSL_CERT_FILE, as any program on Linux does.
            env = {**os.environ, "WEIR_TEST_UPSTREAM_KEY": UPSTREAM_KEY, "WEIR_TEST_WRONG_KEY": "x",
                   "SSL_CERT_FILE": str(ca), "SSL_CERT_DIR": str(tmp_path / "no-such-dir")}
            proc, log = start_dist(tmp_path, name, text, env)
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/readyz", proc=proc, log=log)
            before = relay.handshakes
            if name == "trusted":
                chunks = list(openai_client(url).chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], stream=True))
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                assert text.startswith("Hello from"), text
                assert relay.handshakes > before
            else:
                with pytest.raises(openai.APIStatusError) as e:
                    openai_client(url).chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}])
                assert e.value.status_code in (502, 503, 504), e.value
                assert e.value.response.headers["x-weir-error-source"] == "upstream" or \
                    e.value.response.headers["x-weir-error-source"] == "gateway"
                assert relay.handshakes == before, "a handshake completed against an untrusted certificate"
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        relay.close()
        mock.stop()
