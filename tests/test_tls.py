"""TLS on the OTLP receivers with a self-signed certificate: the real OTel SDK exporters reach both over
TLS, a plaintext client is refused, and a half-given configuration names the missing setting."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collector.config import ConfigError, load_settings
from collector.service import Collector
from tests.conftest import query, start_collector


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_collector(tmp_path: Path, certificate: tuple[Path, Path]) -> Iterator[Collector]:
    cert, key = certificate
    running = start_collector(tmp_path / "data", tls_cert_file=cert, tls_key_file=key)
    yield running
    running.stop()


def _send(exporter: GrpcExporter | HttpExporter, name: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "tls-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("tls").start_as_current_span(name):
        pass
    provider.shutdown()


def test_both_receivers_take_tls_from_the_sdk_exporters(
    tls_collector: Collector, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, _ = certificate
    # requests lets these variables override the exporter's own certificate_file (its verify setting).
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    _send(GrpcExporter(endpoint=f"localhost:{tls_collector.grpc_port}", credentials=credentials), "over grpc+tls")
    _send(
        HttpExporter(endpoint=f"https://127.0.0.1:{tls_collector.http_port}/v1/traces", certificate_file=str(cert)),
        "over https",
    )
    tls_collector.flush()
    assert sorted(r[0] for r in query(tls_collector, "SELECT name FROM spans")) == ["over grpc+tls", "over https"]


def test_plaintext_clients_are_refused(tls_collector: Collector) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{tls_collector.grpc_port}") as channel:
        call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.RpcError) as refused:
            call(b"", timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"http://127.0.0.1:{tls_collector.http_port}/v1/traces", content=b"", timeout=5)
    tls_collector.flush()
    assert query(tls_collector, "SELECT count(*) FROM spans") == [(0,)]


def test_a_half_given_tls_configuration_names_what_is_missing(certificate: tuple[Path, Path]) -> None:
    cert, _ = certificate
    with pytest.raises(ConfigError, match=r"--tls-key-file \(AGENTFLIGHT_TLS_KEY_FILE\) is needed too"):
        load_settings({"tls_cert_file": str(cert)}, environ={})
    with pytest.raises(ConfigError, match=r"AGENTFLIGHT_TLS_CERT_FILE='/no/such.pem': no such file"):
        load_settings({}, environ={"AGENTFLIGHT_TLS_CERT_FILE": "/no/such.pem", "AGENTFLIGHT_TLS_KEY_FILE": str(cert)})
