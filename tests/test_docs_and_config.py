"""The README's schema section matches store/schema.py; configuration errors name the bad setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from collector.config import ConfigError, load_settings
from tests.conftest import REPO


def test_readme_schema_section_is_current() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "store.schema"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.strip()
    readme = (REPO / "README.md").read_text()
    section = readme.split("<!-- schema:start -->", 1)[1].split("<!-- schema:end -->", 1)[0].strip()
    assert section == generated, "README schema section is stale: regenerate with python -m store.schema"


def test_readme_names_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    readme = (REPO / "README.md").read_text()
    assert "`make up`" in readme and "`make test`" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        ({"grpc_port": "70000"}, {}, "--grpc-port"),
        ({}, {"AGENTFLIGHT_HTTP_PORT": "http"}, "AGENTFLIGHT_HTTP_PORT"),
        ({}, {"AGENTFLIGHT_FSYNC": "maybe"}, "AGENTFLIGHT_FSYNC"),
        ({"retention_days": "-3"}, {}, "--retention-days"),
        ({"flush_interval_seconds": "0"}, {}, "--flush-interval-seconds"),
        ({"log_level": "LOUD"}, {}, "--log-level"),
        ({}, {"AGENTFLIGHT_API_NICE": "20"}, "AGENTFLIGHT_API_NICE"),
    ],
)
def test_bad_config_value_names_itself(flags: dict[str, str], env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(flags, env)
    assert str(info.value).startswith(named)


def test_flags_beat_environment_beat_defaults() -> None:
    settings = load_settings({"grpc_port": "5317"}, {"AGENTFLIGHT_GRPC_PORT": "6317", "AGENTFLIGHT_DATA_DIR": "/x"})
    assert settings.grpc_port == 5317 and settings.data_dir == Path("/x") and settings.http_port == 4318


def test_cli_reports_bad_setting_and_exits_nonzero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "collector.cli", "collector", "--grpc-port", "nope"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2 and "--grpc-port='nope'" in result.stderr


def test_receiving_process_stays_light() -> None:
    """The collector's receiving process loads neither pyarrow, DuckDB nor the price table: they live in the
    writer processes (about 65 MB of resident memory saved per collector)."""
    code = (
        "import sys, collector.service, collector.cli\n"
        "print(','.join(m for m in ('pyarrow', 'duckdb', 'genai_prices') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert loaded.stdout.strip() == ""
