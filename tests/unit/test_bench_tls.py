"""The TLS benchmark's reading of h2load and its table (bench/tls.py); `make bench-tls` measures."""

from __future__ import annotations

import pytest

from bench import tls

# What h2load 1.52 printed against hypercorn serving h2 (progress lines left out).
H2LOAD_OUTPUT = """\
starting benchmark...
spawning thread #0: 2 total client(s). 300 total requests
TLS Protocol: TLSv1.3
Cipher: TLS_AES_128_GCM_SHA256
Server Temp Key: X25519 253 bits
Application protocol: h2

finished in 204.76ms, 1465.17 req/s, 152.05KB/s
requests: 300 total, 300 started, 300 done, 297 succeeded, 2 failed, 1 errored, 0 timeout
status codes: 297 2xx, 0 3xx, 2 4xx, 0 5xx
traffic: 31.13KB (31881) total, 11.68KB (11961) headers (space savings 88.27%), 11.43KB (11700) data
"""


def test_h2load_output_gives_the_rate_and_every_request_without_a_2xx() -> None:
    result = tls.parse_h2load_output(H2LOAD_OUTPUT)
    assert result.rps == 1465.17
    assert result.requests == 300
    assert result.duration_s == pytest.approx(0.20476)
    assert result.errors == 3  # 2 answered 4xx ("failed") + 1 with no answer


def test_a_run_that_fell_back_to_http1_is_not_an_http2_figure() -> None:
    with pytest.raises(tls.H2LoadError, match="did not speak HTTP/2"):
        tls.parse_h2load_output(
            H2LOAD_OUTPUT.replace("Application protocol: h2", "Application protocol: http/1.1")
        )
    with pytest.raises(tls.H2LoadError, match="unexpected"):
        tls.parse_h2load_output("connect: Connection refused\n")


def test_http2_is_measured_where_the_profile_declares_it_over_tls() -> None:
    assert tls.serves_h2_over_tls("hypercorn")
    assert not tls.serves_h2_over_tls("uvicorn")


def test_the_table_gives_each_ratio_of_like_with_like() -> None:
    def point(rps: float, errors: int = 0) -> dict[str, object]:
        return {"rps": rps, "p99_ms": 1.0, "errors": errors, "rounds": [rps]}

    results = {
        "run": {
            "rounds": 3,
            "duration_s": 5.0,
            "h2load": True,
            "h2_requests_per_connection": 800,
            "machine": {"nproc": 2, "loadavg_at_start": [1.0]},
        },
        "profiles": {
            "hypercorn": {
                tls.KEEP_ALIVE: point(2000),
                tls.KEEP_ALIVE_TLS: point(1500),
                tls.NEW_CONNECTION: point(1000),
                tls.NEW_CONNECTION_TLS: point(250, errors=1),
                tls.H2_TLS: point(3000),
            },
            "uvicorn": {
                tls.KEEP_ALIVE: point(4000),
                tls.KEEP_ALIVE_TLS: point(3000),
                tls.NEW_CONNECTION: point(2000),
                tls.NEW_CONNECTION_TLS: point(400),
            },
        },
    }
    rows = {line.split(" | ")[0].strip("| "): line for line in tls.markdown(results).splitlines()}
    assert rows["hypercorn"] == "| hypercorn | 2,000 / 1,500 | 0.75 | 1,000 / 250 | 0.25 | 3,000 | 2.00 | 1 |"
    assert rows["uvicorn"] == "| uvicorn | 4,000 / 3,000 | 0.75 | 2,000 / 400 | 0.20 | n/a | n/a | 0 |"
