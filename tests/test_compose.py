"""docker-compose.yml cannot run here (no Docker): it is checked by reading it against the code it runs."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from abusepipe.cli.app import _parser
from abusepipe.settings import Settings
from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_services_volumes_and_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {
        "kafka", "postgres", "topics", "consumer", "intake", "spool", "console", "policy", "zones", "portal"
    }  # fmt: skip
    for name in ("kafka", "postgres", "consumer", "intake", "console", "policy", "zones", "portal"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and check["retries"] >= 3
        assert services[name]["restart"] == "unless-stopped"
    named = set(compose["volumes"])
    mounted = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert {"kafka-data", "postgres-data"} <= mounted
    assert named <= mounted
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", services["kafka"]["environment"]["CLUSTER_ID"])


def test_start_order_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["consumer"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
        "topics": {"condition": "service_completed_successfully"},
    }
    assert services["topics"]["depends_on"]["kafka"] == {"condition": "service_healthy"}
    assert services["intake"]["depends_on"]["topics"] == {"condition": "service_completed_successfully"}
    assert services["spool"]["depends_on"]["topics"] == {"condition": "service_completed_successfully"}


def test_abusepipe_services_run_real_commands_with_real_settings(compose: dict[str, Any]) -> None:
    fields = {f"ABUSEPIPE_{name.upper()}" for name in Settings.model_fields}
    for name in ("topics", "consumer", "intake", "spool", "console", "policy", "zones", "portal"):
        service = compose["services"][name]
        assert service["image"] == "abusepipe:latest" and service["build"] == "."
        environment = service["environment"]
        assert set(environment) <= fields, set(environment) - fields
        assert environment["ABUSEPIPE_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert environment["ABUSEPIPE_DATABASE_URL"].startswith(
            "postgresql+pg8000://abusepipe:${POSTGRES_PASSWORD"
        )
        entrypoint = service.get("entrypoint", ["abusepipe"])
        assert entrypoint[0] == "abusepipe"
        args = [*entrypoint[1:], *service["command"]]
        _parser().parse_args(args)  # exits (fails the test) on a command or option that does not exist
    # No password in the file: it comes from the environment, and compose refuses to start without it.
    password = compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD:?")


def test_the_image_installs_the_packages_and_runs_abusepipe() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) ", dockerfile, re.M))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {name.rstrip("*") for name in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert copied == packages  # every package the wheel holds
    assert all((ROOT / name).is_dir() for name in copied)
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.M)
    assert entrypoint and shlex.split(entrypoint[1].strip("[]").replace(",", " ")) == ["abusepipe"]
    assert re.search(r"^USER \w+", dockerfile, re.M)  # not root
    python = re.search(r"^FROM python:(3\.\d+)", dockerfile, re.M)
    assert python and python[1] in ("3.11", "3.12", "3.13")  # supported and tested


def test_the_heartbeat_path_is_the_one_the_health_check_reads(compose: dict[str, Any]) -> None:
    consumer = compose["services"]["consumer"]
    path = consumer["command"][consumer["command"].index("--heartbeat-file") + 1]
    assert path in " ".join(consumer["healthcheck"]["test"])
    assert Path(path).is_absolute()


def test_the_smtp_intake_is_published_and_probed_on_its_port(compose: dict[str, Any]) -> None:
    intake = compose["services"]["intake"]
    listen = intake["command"][intake["command"].index("--listen") + 1]
    port = listen.rpartition(":")[2]
    assert f"{port}:{port}" in intake["ports"]
    assert f"('127.0.0.1', {port})" in " ".join(intake["healthcheck"]["test"])
    assert intake["environment"]["ABUSEPIPE_SMTP_RECIPIENTS"].startswith("${ABUSEPIPE_SMTP_RECIPIENTS:?")


def test_variable_references_are_well_formed() -> None:
    """Compose ends `${VAR:?message}` at the first `}`: a brace inside the message would break it."""
    text = COMPOSE.read_text()
    references = re.findall(r"\$\{([^}]*)\}", text)
    assert references
    for reference in references:
        assert "{" not in reference and re.fullmatch(r"[A-Z_][A-Z0-9_]*(:?[-?+][^}]*)?", reference), reference
    assert text.count("${") == len(references)
