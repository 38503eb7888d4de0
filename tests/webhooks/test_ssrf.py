"""The SSRF guard attacked: internal targets refused at registration and at send time, the
checked address pinned (no second DNS lookup), redirects never followed."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from rest_framework.test import APIClient

from deliveries.backoff import Verdict, decide
from deliveries.models import Delivery, DeliveryAttempt, Event
from deliveries.services.dispatch import deliveries_dispatch
from devstack.services import LocalRedis
from schemas_app.services import event_type_create
from tests.conftest import (
    WebServer,
    WorkerProcess,
    startup_refusal,
    wait_until,
    worker_env,
)
from tests.proxy import RecordingProxy
from tests.sink import Sink
from webhooks import atransport
from webhooks.models import Endpoint
from webhooks.services import api_key_create, endpoint_create
from webhooks.ssrf import BlockedTarget, check_url
from webhooks_project.env import parse_cidrs

INTERNAL = [
    "http://127.0.0.1/hook",
    "http://127.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.5/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.1/hook",
    "http://0.0.0.0/hook",
    "http://100.64.0.1/hook",  # CGNAT
    "http://224.0.0.1/hook",  # multicast
    "http://240.0.0.1/hook",  # reserved
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://[64:ff9b::a00:1]/hook",  # NAT64 of 10.0.0.1
    "http://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
    "http://localhost:8000/hook",  # a name that resolves to loopback
]
# Every IPv6 form that carries an IPv4 address, and legacy IPv4 spellings resolvers accept.
EMBEDDED = [
    "http://[::127.0.0.1]/hook",  # IPv4-compatible (deprecated ::a.b.c.d)
    "http://[::a9fe:a9fe]/hook",  # IPv4-compatible metadata address, hex
    "http://[::ffff:0:127.0.0.1]/hook",  # SIIT IPv4-translated
    "http://[64:ff9b:1::7f00:1]/hook",  # local-use NAT64 (RFC 8215)
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook",  # Teredo, client 127.0.0.1
    "http://[2606:4700::5efe:7f00:1]/hook",  # ISATAP interface id of 127.0.0.1
    "http://[fe80::1%25eth0]/hook",  # scoped link-local
    "http://2130706433/hook",  # 127.0.0.1 as one integer
    "http://0177.0.0.1/hook",  # octal
    "http://0x7f.1/hook",  # hex, short form
]


@pytest.mark.parametrize("url", EMBEDDED)
def test_ipv4_hidden_in_any_form_is_refused_without_a_lookup(url: str) -> None:
    # registration does not look names up; these are literals, so they are refused even then
    with pytest.raises(BlockedTarget, match="non-public address"):
        check_url(url, allow_private=False, resolve_host=False)
    with pytest.raises(BlockedTarget, match="non-public address"):
        check_url(url, allow_private=False)


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_targets_are_refused(url: str) -> None:
    with pytest.raises(BlockedTarget, match="non-public address"):
        check_url(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("gopher://example.com:70/_x", "scheme 'gopher' is not allowed"),
        ("ftp://example.com/", "scheme 'ftp' is not allowed"),
        ("http:///nohost", "URL has no host"),
        ("http://example.com:99999/", "malformed URL"),
        ("http://no-such-host.invalid/", "cannot resolve host"),
    ],
)
def test_other_schemes_and_broken_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(BlockedTarget, match=message):
        check_url(url, allow_private=False)


def test_a_public_address_passes_and_is_pinned() -> None:
    target = check_url("https://93.184.215.14:8443/x", allow_private=False, https_only=True)
    assert (target.host, target.port, target.address) == ("93.184.215.14", 8443, "93.184.215.14")


def test_https_only_refuses_http() -> None:
    with pytest.raises(BlockedTarget, match="only https"):
        check_url("http://93.184.215.14/x", allow_private=False, https_only=True)


def test_an_allowed_network_opens_only_itself() -> None:
    allowed = parse_cidrs(["10.20.0.0/16"])
    assert check_url("http://10.20.3.4/x", allow_private=False, allowed_cidrs=allowed).address
    with pytest.raises(BlockedTarget):
        check_url("http://10.21.0.1/x", allow_private=False, allowed_cidrs=allowed)
    with pytest.raises(ValueError, match="not a network"):
        parse_cidrs(["10.0.0.0/33"])


@pytest.mark.django_db
def test_registration_refuses_an_internal_url(api: APIClient, settings: Any) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[::ffff:10.0.0.1]/"):
        response = api.post("/api/v1/endpoints/", {"url": url}, format="json")
        assert response.status_code == 400
        assert "non-public address" in response.json()["detail"]
    assert not Endpoint.objects.exists()


@pytest.mark.django_db
def test_create_patch_and_put_all_refuse_embedded_ipv4(api: APIClient, settings: Any) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    created = api.post("/api/v1/endpoints/", {"url": "https://93.184.215.14/x"}, format="json")
    assert created.status_code == 201
    path = f"/api/v1/endpoints/{created.json()['id']}/"
    for url in EMBEDDED:
        assert api.post("/api/v1/endpoints/", {"url": url}, format="json").status_code == 400
        assert api.patch(path, {"url": url}, format="json").status_code == 400
        assert api.put(path, {"url": url}, format="json").status_code == 400
    assert list(Endpoint.objects.values_list("url", flat=True)) == ["https://93.184.215.14/x"]


@pytest.mark.django_db(transaction=True)
def test_an_internal_target_at_send_time_fails_once_as_ssrf_blocked(
    settings: Any, local_sender: None
) -> None:
    # given an endpoint registered while private targets were allowed
    event_type_create(name="order.created", schema={})
    endpoint, _ = endpoint_create(url="http://127.0.0.1:9/internal")
    event = Event.objects.create(event_type_id="order.created", data={})
    delivery = Delivery.objects.create(event=event, endpoint=endpoint)
    # when it is sent after they are no longer allowed
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    deliveries_dispatch(delivery_ids=[delivery.pk])
    # then the attempt fails as ssrf_blocked, without a retry
    wait_until(lambda: Delivery.objects.filter(pk=delivery.pk, status="failed").exists())
    attempt = DeliveryAttempt.objects.get(delivery=delivery)
    assert attempt.error_class == "ssrf_blocked"
    assert "non-public address 127.0.0.1" in attempt.error


def test_a_redirect_to_an_internal_address_is_not_followed(sink: Sink) -> None:
    sink.plan("redirect", 302, Location="http://169.254.169.254/latest/meta-data/")
    result = _apost(sink.url("redirect"))
    assert result.status_code == 302
    assert len(sink.requests()) == 1
    # it is an unsuccessful attempt like any other non-2xx (retried per the schedule)
    verdict = decide(status_code=302, attempts_made=1, schedule=[5], jitter=0, now=0).verdict
    assert verdict is Verdict.RETRY


@pytest.fixture
def tls_sink(tmp_path: Any) -> Iterator[tuple[int, list[str], Path]]:
    """An HTTPS server on 127.0.0.1 whose certificate names only `hook.test`; it records the
    TLS server name each client asked for."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hook.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hook.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    names: list[str] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.sni_callback = lambda sock, server_name, ctx: names.append(server_name) and None

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["content-length"]))
            names.append("host=" + self.headers["host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], names, cert_file
    server.shutdown()


def _apost(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    proxy: str | None = None,
    **kwargs: Any,
) -> Any:
    """One request through the sender's transport, on a loop of its own."""
    options = {"timeout": 2, "connect_timeout": 1, "max_response_bytes": 100} | kwargs

    async def run() -> Any:
        client = atransport.Client(ssl_context=ssl_context, proxy=proxy)
        try:
            return await client.post(url, b"{}", {}, **options)
        finally:
            await client.close()

    return asyncio.run(run())


def test_the_checked_address_is_used_even_if_the_name_resolves_elsewhere_later(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a name that the check resolved to the (allowed) sink, and that now resolves to an
    # internal address (DNS rebinding between the check and the connection)
    lookups: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            lookups.append(host)
            return real("127.0.0.2", port, *args, **kwargs)  # elsewhere, on this machine
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = int(sink.url("x").split(":")[2].split("/")[0])
    url = f"http://rebind.test:{port}/arebind"
    # when it is sent pinned to the checked address
    result = _apost(url, address="127.0.0.1")
    # then it reached that address, named by its host, with no lookup at all
    assert result.status_code == 200, result.error
    (received,) = sink.requests("arebind")
    assert received.headers["host"] == f"rebind.test:{port}"
    assert lookups == []
    # (without the pin it would have gone where the name resolves now)
    unpinned = _apost(url, timeout=1, connect_timeout=0.5)
    assert unpinned.status_code is None
    assert lookups == ["rebind.test"]
    assert len(sink.requests("arebind")) == 1


def test_a_pinned_https_request_keeps_the_server_name_and_checks_the_certificate(
    tls_sink: tuple[int, list[str], Path],
) -> None:
    port, names, cert_file = tls_sink
    trusting = ssl.create_default_context(cafile=str(cert_file))
    ok = _apost(f"https://hook.test:{port}/x", address="127.0.0.1", ssl_context=trusting)
    assert ok.status_code == 204, ok.error
    assert names == ["hook.test", f"host=hook.test:{port}"]
    wrong = _apost(f"https://other.test:{port}/x", address="127.0.0.1", ssl_context=trusting)
    assert wrong.status_code is None
    assert wrong.error_class == "tls", wrong.error
    # and a certificate nobody trusts is refused
    untrusted = _apost(f"https://hook.test:{port}/x", address="127.0.0.1")
    assert untrusted.error_class == "tls", untrusted.error


def test_an_answer_is_read_only_up_to_its_bound(sink: Sink) -> None:
    sink.plan("ahuge", 200, mode="huge")
    huge = _apost(sink.url("ahuge"), timeout=10)
    assert huge.status_code == 200
    assert len(huge.body) == 100


# --- The egress proxy (WEBHOOKS_EGRESS_PROXY) ---------------------------------------------------


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    server = RecordingProxy().start()
    yield server
    server.stop()


def test_through_the_egress_proxy_http_asks_for_the_checked_address(
    sink: Sink, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    real = socket.getaddrinfo

    def recording(host: Any, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    port = int(sink.url("x").split(":")[2].split("/")[0])
    result = _apost(f"http://rebind.test:{port}/aproxy", address="127.0.0.1", proxy=proxy.url)
    assert result.status_code == 200, result.error
    # the proxy was asked for the checked address, with the URL's name as the Host
    assert proxy.asked == [("POST", f"http://127.0.0.1:{port}/aproxy", f"rebind.test:{port}")]
    (received,) = sink.requests("aproxy")
    assert received.headers["host"] == f"rebind.test:{port}"
    assert "rebind.test" not in lookups  # the name was never resolved again


def test_through_the_egress_proxy_https_tunnels_to_the_checked_address_and_checks_the_name(
    tls_sink: tuple[int, list[str], Path], proxy: RecordingProxy
) -> None:
    port, names, cert_file = tls_sink
    trusting = ssl.create_default_context(cafile=str(cert_file))
    ok = _apost(
        f"https://hook.test:{port}/x", address="127.0.0.1", ssl_context=trusting, proxy=proxy.url
    )
    assert ok.status_code == 204, ok.error
    assert [(method, target) for method, target, _ in proxy.asked] == [
        ("CONNECT", f"127.0.0.1:{port}")
    ]
    # TLS inside the tunnel still names the URL's host, and its certificate must match it
    assert names == ["hook.test", f"host=hook.test:{port}"]
    wrong = _apost(
        f"https://other.test:{port}/x", address="127.0.0.1", ssl_context=trusting, proxy=proxy.url
    )
    assert wrong.error_class == "tls", wrong.error


def test_an_egress_proxy_that_is_not_an_http_url_is_refused_at_start_up() -> None:
    said = startup_refusal(worker_env(WEBHOOKS_EGRESS_PROXY="socks5://127.0.0.1:1080"))
    assert "WEBHOOKS_EGRESS_PROXY must be an http:// or https:// URL" in said


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_worker_with_an_egress_proxy_delivers_through_it(
    sink: Sink, proxy: RecordingProxy, tmp_path: Path
) -> None:
    # its own Redis, web and worker (the session's worker must not take the delivery)
    redis = LocalRedis(tmp_path / "redis", persist=False).start()
    # the SSRF guard on (loopback allowed by network, as a partner's VPN would be): targets are
    # resolved and checked, and the proxy is asked for the checked address
    env = worker_env(
        REDIS_URL=redis.url(),
        WEBHOOKS_EGRESS_PROXY=proxy.url,
        WEBHOOKS_ALLOW_PRIVATE_TARGETS="false",
        WEBHOOKS_ALLOWED_TARGET_CIDRS="127.0.0.0/8",
    )
    event_type_create(name="order.created", schema={"type": "object"})
    endpoint, _ = endpoint_create(url=sink.url("viaproxy").replace("127.0.0.1", "localhost"))
    _, key = api_key_create(name="proxy", scopes=["events:write"])
    web = WebServer(env).start()
    worker = WorkerProcess(env).start()
    try:
        event = {"type": "order.created", "data": {"n": 1}}
        assert web.post_json("/api/v1/events/", event, key)[0] == 202
        wait_until(lambda: Delivery.objects.filter(status="succeeded").exists(), timeout=30)
    finally:
        worker.stop()
        web.stop()
        redis.stop()
    port = int(sink.url("x").split(":")[2].split("/")[0])
    # the SSRF check resolved localhost; the proxy was asked for that address
    assert proxy.asked == [("POST", f"http://127.0.0.1:{port}/viaproxy", f"localhost:{port}")]
    assert sink.requests("viaproxy")[0].headers["host"] == f"localhost:{port}"
    assert Delivery.objects.get().endpoint_id == endpoint.pk
