"""``wirewise decide`` for a several-process deployment, against the committed cluster runs.

No synthetic figures: the per-connection costs come from the reference run (results/REFERENCE),
Redis's and HAProxy's from the idle results that recorded them, and each estimate is checked
against what those runs measured (``wirewise.report.scaleout.measured_bytes``).

- results/20261130-155520: 9,000 idle SSE clients, 3 instances behind HAProxy, Redis. It is the
  only run that measured HAProxy, so its HAProxy and Redis figures come from itself: the check
  is of the instances and the kernel's three sockets per client, plus the sum.
- results/20261130-141803: 40,000 idle SSE clients, 3 instances on one port (SO_REUSEPORT),
  Redis. Its Redis figure comes from the newer run above: nothing is read back from itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wirewise.cli import main
from wirewise.cluster import MAX_PROXIED
from wirewise.decide import (
    Estimate,
    PartFit,
    decide,
    deployment_runs,
    kernel_share,
    measured_parts,
)
from wirewise.plan import ROOT
from wirewise.report.scaleout import estimate_table, idle_workload, measured_bytes, scaled
from wirewise.results import Result, Summary, load_summary

RESULTS = ROOT / "results"
HAPROXY_RUN = "20261130-155520"
REUSEPORT_RUN = "20261130-141803"
OFF_BY = 0.20


def run_path(run_id: str) -> Path:
    path = RESULTS / run_id
    if not (path / "summary.json").is_file():
        pytest.skip(f"results/{run_id} is not in this checkout")
    return path


@pytest.fixture(scope="module")
def reference() -> Summary:
    pointer = RESULTS / "REFERENCE"
    if not pointer.is_file():
        pytest.skip("no results/REFERENCE file")
    return load_summary(run_path(pointer.read_text().strip()))


@pytest.fixture(scope="module")
def parts() -> dict[str, PartFit]:
    return measured_parts(deployment_runs([RESULTS]))


def idle_sse(run_id: str) -> Result:
    found = load_summary(run_path(run_id)).find("idle", "sse")
    assert found is not None and found.valid
    return found


def top_clients(result: Result) -> int:
    return int(max(p["clients"] for p in result.memory_per_connection.points))


def sse_estimate(
    reference: Summary, parts: dict[str, PartFit], clients: int, instances: int, balancer: str
) -> Estimate:
    workload = idle_workload(clients, instances, balancer)
    return decide(workload, reference, parts=parts).estimates["sse"]


def test_the_9000_client_haproxy_run_is_estimated_within_20_percent(
    reference: Summary, parts: dict[str, PartFit]
) -> None:
    """Before: one server, no balancer, no Redis: 178 MiB against 453 (0.39)."""
    result = idle_sse(HAPROXY_RUN)
    clients = top_clients(result)
    assert clients == 9_000
    est = sse_estimate(reference, parts, clients, 3, "haproxy")
    assert est.servers == 3 and est.limit == "the instances asked"
    assert est.balancer_processes == 1
    assert set(est.memory_parts) == {"instances", "kernel", "redis", "haproxy"}
    assert est.memory_bytes == sum(est.memory_parts.values())
    assert f"in results/{HAPROXY_RUN}: haproxy" in est.sources["haproxy"]
    assert f"in results/{HAPROXY_RUN}: redis" in est.sources["redis"]
    measured = measured_bytes(result)
    assert abs(est.memory_bytes / measured - 1) <= OFF_BY, (est.memory_bytes, measured)


def test_the_40000_client_reuseport_run_is_estimated_within_20_percent(
    reference: Summary, parts: dict[str, PartFit]
) -> None:
    """No balancer process: 2 sockets per client, the kernel counted once; Redis is added
    because there are several instances (measured by the newer HAProxy run, not this one)."""
    result = idle_sse(REUSEPORT_RUN)
    clients = top_clients(result)
    assert clients == 40_000
    est = sse_estimate(reference, parts, clients, 3, "reuseport")
    assert est.servers == 3 and est.balancer_processes is None
    assert set(est.memory_parts) == {"instances", "kernel", "redis"}
    assert REUSEPORT_RUN not in est.sources["redis"]
    assert est.memory_bytes is not None
    measured = measured_bytes(result)
    assert abs(est.memory_bytes / measured - 1) <= OFF_BY, (est.memory_bytes, measured)


def test_the_kernel_share_is_the_deployments_sockets() -> None:
    """On loopback a client's connection is 2 sockets, 1 the server's; through a balancer 4
    (client, balancer front, balancer back, instance), 3 the deployment's."""
    assert kernel_share(False) == 0.5 and kernel_share(True) == 0.75
    for run_id, share in ((HAPROXY_RUN, 0.75), (REUSEPORT_RUN, 0.5)):
        result = idle_sse(run_id)
        top = max(result.memory_per_connection.points, key=lambda p: p["clients"])
        processes = sum(top["parts_rss_bytes"].values())
        assert measured_bytes(result) == pytest.approx(processes + share * top["kernel_bytes"])


def test_the_model_counts_three_sockets_through_a_balancer(
    reference: Summary, parts: dict[str, PartFit]
) -> None:
    direct = sse_estimate(reference, parts, 9_000, 3, "reuseport")
    proxied = sse_estimate(reference, parts, 9_000, 3, "haproxy")
    assert proxied.memory_parts["kernel"] == pytest.approx(3 * direct.memory_parts["kernel"], 1e-6)
    assert proxied.memory_parts["instances"] == direct.memory_parts["instances"]


def test_nginx_without_an_idle_run_reports_the_missing_measurement(
    reference: Summary, parts: dict[str, PartFit], capsys: pytest.CaptureFixture[str]
) -> None:
    assert "nginx" not in parts, "a committed run measured nginx: this test needs another part"
    est = sse_estimate(reference, parts, 9_000, 3, "nginx")
    assert est.memory_bytes is None, "no number invented"
    assert "nginx" not in est.memory_parts and "redis" in est.memory_parts
    assert "--balancer nginx` measures it" in est.sources["nginx"]
    assert est.sources["memory_bytes"].startswith("not summed: nginx never measured")
    assert est.balancer_processes == 1, "the descriptor limit needs no measurement"
    args = ["--clients", "9000", "--push-rate", "0.01", "--send-rate", "0", "--latency-ms", "1000"]
    capsys.readouterr()
    assert main(["decide", *args, "--instances", "3", "--balancer", "nginx", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    sse = answer["estimates"]["sse"]
    assert sse["memory_bytes"] is None and "measures it" in sse["sources"]["nginx"]
    assert answer["workload"]["balancer"] == "nginx" and answer["workload"]["instances"] == 3
    (ranked,) = [r for r in answer["ranking"] if r["transport"] == "sse"]
    assert any("no total: not summed: nginx never measured" in r for r in ranked["reasons"])


def test_a_balancer_process_carries_at_most_9900_clients(
    reference: Summary, parts: dict[str, PartFit]
) -> None:
    """Two descriptors per proxied client under the 20,000 file limit, as the cluster's
    HAProxy and nginx configurations allow; each process has its own base RSS."""
    assert MAX_PROXIED == 9_900
    for clients, processes in ((9_900, 1), (9_901, 2), (40_000, 5)):
        est = sse_estimate(reference, parts, clients, 1, "haproxy")
        assert est.balancer_processes == processes, clients
    est = sse_estimate(reference, parts, 40_000, 1, "haproxy")
    fit = parts["haproxy"]
    assert est.memory_parts["haproxy"] == int(5 * fit.base + 40_000 * fit.per_client)
    assert "x 5 processes" in est.sources["haproxy"]
    assert est.servers == 3 and "redis" in est.memory_parts, "3 instances needed: Redis added"


def test_one_process_without_a_balancer_is_todays_model(reference: Summary) -> None:
    """Default: as many servers as needed, no balancer; one server needs no Redis."""
    est = sse_estimate(reference, {}, 4_000, 1, "none")
    idle = reference.find("idle", "sse")
    assert idle is not None
    memory = idle.memory_per_connection
    assert memory.rss_bytes and memory.kernel_bytes and memory.base_rss_bytes
    per_conn = memory.rss_bytes + memory.kernel_bytes
    assert est.servers == 1 and set(est.memory_parts) == {"instances", "kernel"}
    assert est.memory_bytes == pytest.approx(4_000 * per_conn + memory.base_rss_bytes, abs=2)
    assert est.memory_per_server_bytes == est.memory_bytes


def test_several_servers_needed_without_a_redis_measurement_leave_no_total(
    reference: Summary,
) -> None:
    est = sse_estimate(reference, {}, 40_000, 1, "none")
    assert est.servers == 3 and est.memory_bytes is None
    assert "--instances 3 --balancer reuseport` measures it" in est.sources["redis"]


def test_the_report_estimates_each_run_on_its_own_deployment(reference: Summary) -> None:
    for run_id, balancer in ((HAPROXY_RUN, "haproxy"), (REUSEPORT_RUN, "reuseport")):
        summary = load_summary(run_path(run_id))
        table = estimate_table(scaled(summary), reference, "run REF", summary.metadata["plan"])
        (row,) = table.rows
        assert row[2] == f"3 instances, {balancer}" and row[3] == "3"
        assert row[-1] == "within 20 %", row
        assert "3 of them the deployment's" in table.note


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--instances", "0", "must be above 0"),
        ("--instances", "-2", "must be above 0"),
        ("--balancer", "traefik", "must be one of haproxy, nginx, reuseport, none"),
    ],
)
def test_bad_deployment_flags_exit_2(
    flag: str, value: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--clients", "900", "--push-rate", "1", "--send-rate", "0", "--latency-ms", "100"]
    capsys.readouterr()
    assert main(["decide", *args, flag, value, "--json"]) == 2
    out, err = capsys.readouterr()
    text = " ".join(err.replace("│", " ").split())
    assert out == "" and f"'{flag}'" in text and said in text, text
