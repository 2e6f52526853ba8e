"""``python -m bench plot`` draws saved results without running any bench.

Results are written by hand into a temporary results directory in the shape bench/report.py
saves them; the tests check which results are picked, what series they give, and that two
PNG files come out.
"""

import json

import pytest

from bench import plot
from bench.__main__ import main as bench_main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fanout_run(system, subs, rate, p50, delivered_per_s):
    return {"system": system, "subscribers": subs, "rate": rate, "deliveries_per_s": delivered_per_s,
            "latency_ms": {"count": 10, "p50": p50, "p90": p50 * 1.5, "p99": p50 * 2, "max": p50 * 3}}


def save(directory, name, data, quick=False):
    data = {**data, "args": {"quick": quick}, "machine": {"cpus": 2, "cpu_model": "test CPU"}}
    (directory / name).write_text(json.dumps(data))


@pytest.fixture
def results(tmp_path):
    directory = tmp_path / "results"
    directory.mkdir()
    save(directory, "fanout-20261201-100000.json", {"smooth": [fanout_run("smooth", 1000, 20, 99.0, 1.0)],
                                                    "rabbitmq": []})
    save(directory, "fanout-20261202-100000.json", {
        "smooth": [fanout_run("smooth", 1000, 20, 18.0, 19_941.0)],
        "rabbitmq": [fanout_run("rabbitmq", 1000, 20, 25.2, 19_810.0)]})
    save(directory, "fanout-20261203-100000.json", {"smooth": [fanout_run("smooth", 20, 50, 10.0, 1000.0)],
                                                    "rabbitmq": []}, quick=True)
    save(directory, "sweep-20261202-100000.json", {
        "smooth": [{"system": "smooth", "subscribers": 200, "senders": 1, "max_deliveries_per_s": 284_997.0}],
        "rabbitmq": [{"system": "rabbitmq", "subscribers": 200, "senders": 1, "max_deliveries_per_s": 47_593.0}]})
    save(directory, "rooms-20261202-100000.json", {"runs": [
        {**fanout_run("smooth", 0, 0, 27.1, 1000.0), "connections": 5000},
        {**fanout_run("rabbitmq", 0, 0, 0.51, 1000.0), "connections": 5000}]})
    return directory


def test_the_newest_full_run_of_each_scenario_is_picked_over_older_ones_and_smoke_runs(results):
    picked = plot.newest_results(results)
    assert {name: run.path.name for name, run in picked.items()} == {
        "fanout": "fanout-20261202-100000.json", "sweep": "sweep-20261202-100000.json",
        "rooms": "rooms-20261202-100000.json"}


def test_a_smoke_run_is_drawn_when_it_is_all_there_is(tmp_path):
    save(tmp_path, "fanout-20261203-100000.json", {"smooth": [fanout_run("smooth", 20, 50, 10.0, 1000.0)]},
         quick=True)
    assert plot.newest_results(tmp_path)["fanout"].quick


def test_the_series_put_smooth_beside_rabbitmq(results):
    picked = plot.newest_results(results)
    latency = {group.label: group.values for group in plot.latency_groups(picked)}
    assert latency["fan-out\n1,000 subs x 20/s"] == {
        "smooth": {"p50": 18.0, "p90": 27.0, "p99": 36.0}, "rabbitmq": {"p50": 25.2, "p90": 37.8, "p99": 50.4}}
    assert latency["many rooms\n5,000 conns"]["rabbitmq"]["p50"] == 0.51
    throughput = {group.label: group.values for group in plot.throughput_groups(picked)}
    assert throughput["max zero-loss\n200 subs, 1 sender(s)"] == {"smooth": {"value": 284_997.0},
                                                                  "rabbitmq": {"value": 47_593.0}}
    assert throughput["fan-out\n1,000 subs x 20/s"]["rabbitmq"] == {"value": 19_810.0}


def test_bench_plot_writes_two_pngs(results, tmp_path, capsys):
    out = tmp_path / "plots"
    assert bench_main(["plot", "--results", str(results), "--out", str(out)]) == 0
    for name in ("latency.png", "throughput.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    assert "latency.png" in capsys.readouterr().out


def test_no_results_is_an_error_that_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="make bench"):
        plot.render(tmp_path, tmp_path / "plots")
