"""`shiwu serve` at the protocol's edges, on a real server process: API keys compared as UTF-8
bytes, JSON and security headers on every answer (invalid HTTP and CORS refusals included), query
parameters checked and documented."""

import json
import subprocess
import sys

import httpx
import pytest

from support.photos import DATA
from support.raw_http import AUTH, KEY, connect, read_reply, split_reply

from shiwu.server.process import ServerProcess


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--backend", "torch", "--threads", "1", "--warmup-seconds", "0", "--no-access-log",
                        "--cors-origin", "https://app.example"], env={"SHIWU_API_KEY": KEY}) as process:
        yield process


# ---------------------------------------------------------------- 7. non-ASCII API key


def test_a_non_ascii_api_key_is_compared_as_utf8_bytes(server):
    data = (DATA / "horse.png").read_bytes()

    def call(headers):
        return httpx.post(server.url + "/v1/recognize", content=data, timeout=30,
                          headers=[(b"Content-Type", b"image/png")] + headers)

    assert call(AUTH).status_code == 200
    assert call([(b"Authorization", b"Bearer " + KEY.encode("utf-8"))]).status_code == 200
    assert call([(b"X-API-Key", "密码".encode("utf-8"))]).status_code == 401
    assert call([(b"X-API-Key", KEY.encode("gb18030"))]).status_code == 401  # other bytes
    assert call([]).status_code == 401


def test_an_api_key_that_is_not_text_is_refused_at_start():
    run = subprocess.run([sys.executable, "-m", "shiwu", "serve", "--api-key", "bad\x01key"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "API key" in run.stderr


# ---------------------------------------------------------------- 8. JSON and headers everywhere


SECURITY = ("x-content-type-options", "content-security-policy", "x-frame-options")


@pytest.mark.parametrize("request_bytes", [
    b"GET /v1/models?q=\xe4\xbd\xa0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",             # raw non-ASCII query
    b"POST /v1/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",   # bad Content-Length
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000,                      # head over 16 KiB
], ids=["non-ascii-target", "bad-content-length", "huge-head"])
def test_invalid_http_requests_get_json(server, request_bytes):
    with connect(server) as sock:
        sock.sendall(request_bytes)
        status, headers, body = split_reply(read_reply(sock))
    assert status == 400 and headers["content-type"] == "application/json"
    assert "invalid HTTP request" in json.loads(body)["detail"]
    assert all(name in headers for name in SECURITY)


def test_every_response_has_security_headers_and_head_works(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for path in ("/", "/docs", "/openapi.json", "/v1/models", "/healthz", "/metrics", "/nope"):
            response = client.get(path)
            assert response.status_code in (200, 404), path
            for name in SECURITY:
                assert name in response.headers, (path, name)
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
            if response.status_code == 404:
                assert response.json()["detail"]
        assert client.get("/v1/models").headers["content-security-policy"].startswith("default-src 'none'")
        assert client.get("/redoc").status_code == 404  # it loaded broken under the CSP: /docs only
        docs = client.get("/docs").headers["content-security-policy"]
        assert "script-src 'self'" in docs  # Swagger UI's own files still load
        head = client.head("/")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"].startswith("text/html")
        for path in ("/healthz", "/readyz", "/v1/models"):
            assert client.head(path).status_code == 200, path


def test_cors_refusal_is_json(server):
    refused = httpx.options(server.url + "/v1/recognize", timeout=10, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/json"
    assert refused.json() == {"detail": "Disallowed CORS origin"}
    assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize("query, status, words", [
    ("topk=2&topk=3", 400, "topk given 2 times"),
    ("topk=1.0", 422, "whole number"),
    ("topk=%201", 422, "whole number"),
    ("top_k=3", 400, "unknown query parameter 'top_k'; accepted: topk"),
    ("topk=2&x=1&y=2", 400, "'x', 'y'; accepted: topk"),
])
def test_query_parameters_are_checked(server, query, status, words):
    response = httpx.post(f"{server.url}/v1/recognize?{query}", content=(DATA / "horse.png").read_bytes(),
                          headers=[(b"Content-Type", b"image/png")] + AUTH, timeout=30)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_query_parameters_are_documented(server):
    schema = httpx.get(server.url + "/openapi.json", timeout=10).json()
    (parameter,) = schema["paths"]["/v1/recognize"]["post"]["parameters"]
    assert parameter["name"] == "topk" and parameter["schema"]["type"] == "integer"
    assert "only query parameter" in parameter["description"]
    ok = httpx.post(f"{server.url}/v1/recognize?topk=2", content=(DATA / "horse.png").read_bytes(),
                    headers=[(b"Content-Type", b"image/png")] + AUTH, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["results"][0]["predictions"]) == 2


def test_options_that_would_be_ignored_are_refused_by_name(server):
    photo = [("files", ("horse.png", (DATA / "horse.png").read_bytes(), "image/png"))]
    # FastAPI ignores an undeclared query parameter: 10 matches came back for ?top_k=2
    search = httpx.post(f"{server.url}/v1/search?top_k=2", files=photo, headers=AUTH, timeout=30)
    assert search.status_code == 400, search.text
    assert search.json()["detail"] == "unknown query parameter 'top_k'; accepted: text, topk"
    embed = httpx.post(f"{server.url}/v1/embed?topk=2", files=photo, headers=AUTH, timeout=30)
    assert embed.status_code == 400 and "accepted: none" in embed.json()["detail"]
    # a form field was ignored too: five predictions for topk=1
    form = httpx.post(f"{server.url}/v1/recognize", files=photo, data={"topk": "1"}, headers=AUTH, timeout=30)
    assert form.status_code == 400, form.text
    assert "form field 'topk' not read" in form.json()["detail"] and "?topk=3" in form.json()["detail"]


def test_the_api_schema_says_what_is_sent():
    import warnings

    from shiwu.server import ServerSettings
    from shiwu.server.app import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FastAPI warned of duplicate operation ids (GET and HEAD)
        schema = create_app(ServerSettings()).openapi()
    operations = [operation for item in schema["paths"].values() for operation in item.values()]
    ids = [operation["operationId"] for operation in operations]
    assert len(ids) == len(set(ids)) and len(ids) >= 12
    assert "HTTPValidationError" not in json.dumps(schema)  # the app never sends FastAPI's list
    problem = {"$ref": "#/components/schemas/Problem"}
    for operation in operations:
        assert operation["responses"]["500"]["content"]["application/json"]["schema"] == problem
    for path in ("/v1/duplicates", "/v1/thumbnails/{row_id}", "/v1/search"):
        (operation,) = schema["paths"][path].values()
        assert operation["responses"]["422"]["content"]["application/json"]["schema"] == problem, path


def test_a_compressed_body_is_named_as_such(server):
    import gzip

    body = gzip.compress((DATA / "horse.png").read_bytes())
    response = httpx.post(f"{server.url}/v1/recognize", content=body, timeout=30,
                          headers=[(b"Content-Type", b"image/png"), (b"Content-Encoding", b"gzip")] + AUTH)
    assert response.status_code == 415
    assert "Content-Encoding 'gzip' is not read" in response.json()["detail"]
