"""The ops files under deploy/monitoring/ hold: the alert rules are valid and fire on the trouble
they are for (promtool), every dashboard query is valid PromQL, and every metric the dashboard
and the alerts name is one the service exports (a live /metrics scrape after a real job)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from eoz.raster import RasterMeta, write_raster
from tests.workers.servers import ROOT, wait_for_job

MONITORING = ROOT / "deploy" / "monitoring"
RULES, RULE_TESTS, DASHBOARD = (MONITORING / name for name in
                                ("eoz-alerts.yaml", "eoz-alerts.test.yaml", "eoz-dashboard.json"))
METRIC = re.compile(r"\beoz_[a-z0-9_]+")
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m"}


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (`apt-get install prometheus`; .ci/run does this)")
    return binary


def dashboard_queries() -> list[str]:
    """Every query of every panel (rows nest their panels when collapsed)."""
    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))
    return [target["expr"] for panel in panels(json.loads(DASHBOARD.read_text())["panels"])
            for target in panel.get("targets", [])]


def alert_queries() -> list[str]:
    return [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def promtool_run(promtool: str, *args: str, cwd: Path) -> None:
    done = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_alert_rules_are_valid_and_fire_on_their_trouble(promtool):
    promtool_run(promtool, "check", "rules", RULES.name, cwd=MONITORING)
    promtool_run(promtool, "test", "rules", RULE_TESTS.name, cwd=MONITORING)


def test_every_dashboard_query_is_valid_promql(promtool, tmp_path):
    """promtool parses each query as a recording rule, with Grafana's interval variables filled in."""
    queries = dashboard_queries()
    assert len(queries) >= 10
    rules = []
    for number, query in enumerate(queries):
        for variable, value in GRAFANA_INTERVALS.items():
            query = query.replace(variable, value)
        rules.append({"record": f"eoz_dashboard:query_{number}", "expr": query})
    (tmp_path / "dashboard.rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard",
                                                                                "rules": rules}]}))
    promtool_run(promtool, "check", "rules", "dashboard.rules.yaml", cwd=tmp_path)


@pytest.fixture()
def scraped(service_env, tmp_path) -> dict[str, set[str]]:
    """The embedded service after one lossy compress job: each metric family's sample names."""
    rng = np.random.default_rng(0)
    array = (1000 + np.cumsum(rng.integers(-20, 21, (2, 64, 64)), axis=2)).astype(np.uint16)
    path = tmp_path / "scene.tif"
    write_raster(path, array, RasterMeta(64, 64, 2, "uint16", ["a", "b"], None, None, None))
    with TestClient(create_app()) as client:
        with open(path, "rb") as f:
            answer = client.post("/v1/compress", files={"file": ("scene.tif", f, "image/tiff")},
                                 data={"model": "jpeg2000", "psnr": "40"})
        assert answer.status_code == 202, answer.text
        assert wait_for_job(client, answer.json()["status_url"])["status"] == "finished"
        text = client.get("/metrics").text
    # prometheus_client's *_created series (when each counter started) are bookkeeping, not figures
    return {family.name: {sample.name for sample in family.samples}
            for family in text_string_to_metric_families(text)
            if family.name.startswith("eoz_") and not family.name.endswith("_created")}


def test_every_metric_the_dashboard_and_alerts_name_is_exported(scraped):
    exported = set().union(*scraped.values())
    for query in dashboard_queries() + alert_queries():
        assert set(METRIC.findall(query)) <= exported, (query, sorted(exported))


def test_the_dashboard_shows_every_metric_the_service_exports(scraped):
    named = {name for query in dashboard_queries() for name in METRIC.findall(query)}
    for family, samples in scraped.items():
        assert samples & named, f"no panel shows {family}"
