"""make test-upstream's report: which guarantee holds on which profile, and what moved since uv.lock."""

from __future__ import annotations

from devkit.upstream import direct_dependencies, moved, outcomes, profile_of, table

REPORT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.smoke.test_realtime" name="test_echo[uvicorn]" time="1"/>
<testcase classname="tests.smoke.test_realtime" name="test_echo[gunicorn-asgi]" time="1">
  <failure message="boom">trace</failure></testcase>
<testcase classname="tests.smoke.test_realtime" name="test_echo[gunicorn]" time="1"/>
<testcase classname="tests.resilience.test_drain" name="test_drain[granian-websocket]" time="1">
  <skipped type="pytest.xfail" message="granian gap"/></testcase>
<testcase classname="tests.resilience.test_drain" name="test_drain[granian-stream]" time="1"/>
<testcase classname="tests.smoke.test_process" name="test_bad_setting" time="1">
  <skipped type="pytest.skip" message="no tool"/></testcase>
</testsuite></testsuites>"""


def test_the_profile_is_read_from_the_test_id() -> None:
    assert profile_of("test_echo[gunicorn-asgi]") == "gunicorn-asgi"
    assert profile_of("test_echo[gunicorn]") == "gunicorn"
    assert profile_of("test_x[2-granian-websocket]") == "granian"
    assert profile_of("test_x[websocket]") == "any"
    assert profile_of("test_x") == "any"


def test_the_table_shows_each_guarantee_on_each_profile() -> None:
    found = outcomes(REPORT)
    assert len(found) == 6
    lines = table(found).splitlines()
    header = lines[0].split()
    assert header == ["guarantee", "uvicorn", "gunicorn", "gunicorn-asgi", "granian", "any"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:-1]}
    assert rows["test_realtime::test_echo"] == ["ok", "ok", "FAIL", "-", "-"]
    assert rows["test_drain::test_drain"] == ["-", "-", "-", "ok/xfail", "-"]
    assert rows["test_process::test_bad_setting"] == ["-", "-", "-", "-", "skip"]
    assert lines[-1] == "6 tests, 1 failed"


def test_what_moved_names_only_direct_dependencies() -> None:
    pyproject = '[project]\ndependencies = ["uvicorn>=0.54,<1", "granian>=2.8"]\n'
    names = direct_dependencies(pyproject)
    assert names == ["granian", "uvicorn"]
    old = {"uvicorn": "0.54.0", "granian": "2.8.9", "anyio": "4.0"}
    new = {"uvicorn": "0.55.0", "granian": "2.8.9", "anyio": "4.1"}
    assert moved(old, new, names) == ["uvicorn: 0.54.0 -> 0.55.0"]
