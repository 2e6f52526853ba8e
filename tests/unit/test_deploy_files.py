"""The deploy files (Dockerfile, deploy/compose.yaml, deploy/haproxy.cfg), checked statically.

No container runtime or image registry is reachable here, so nothing is built or started.
What can be known without one is checked: the compose file parses, runs the services the
README promises, and gives chat and presence settings that are Smooth's (every name a field of
app/settings.py, every value one ``Settings`` accepts, the secrets left to the operator, the
production choices made); the proxy keeps SockJS HTTP sessions on one node; the Dockerfile is
multi-stage, runs as a user other than root, serves with gunicorn.conf.py (the gevent worker),
and installs what the Makefile installs, the same way.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from app.settings import DEV_JWT_SECRET, Settings

REPO = Path(__file__).resolve().parents[2]
SETTING_NAMES = {field.metadata["env"] for field in dataclasses.fields(Settings)}
# What a deployment must set itself: the defaults are dev-only, empty, or wrong for production.
REQUIRED = {"JWT_SECRET", "SERVICE_TOKEN", "PRESENCE_TOKEN", "KAFKA_BOOTSTRAP_SERVERS", "MONGO_URL", "REDIS_URL",
            "MONGO_WRITE_CONCERN", "KAFKA_PARTITIONS", "BIND_HOST", "PRESENCE_HOST"}
REQUIRED_CHAT = REQUIRED | {"CHAT_NODE_ID", "CHAT_WORKERS"}
REQUIRED_PRESENCE = REQUIRED | {"CHAT_SERVER_URL"}
SECRETS = ("JWT_SECRET", "SERVICE_TOKEN", "PRESENCE_TOKEN")
_VARIABLE = re.compile(r"\$\{([A-Z_]+)(?::?[-?]([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "deploy/compose.yaml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def stages(dockerfile: str) -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split into stages."""
    text = re.sub(r"\\\n\s*", " ", dockerfile)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    result: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            result.append([])
        result[-1].append(line)
    return result


def image_env(dockerfile: str) -> dict[str, str]:
    """ENV of the final stage (``KEY=value`` pairs)."""
    env: dict[str, str] = {}
    for line in stages(dockerfile)[-1]:
        if line.upper().startswith("ENV "):
            env.update(pair.split("=", 1) for pair in shlex.split(line[4:]))
    return env


def service_env(compose: dict, name: str, dockerfile: str) -> dict[str, str]:
    return {**image_env(dockerfile), **{key: str(value) for key, value in compose["services"][name]["environment"].items()}}


def smooth_services(compose: dict) -> dict[str, str]:
    """Services built from this repository's Dockerfile: name -> "chat" or "presence"."""
    return {name: "presence" if "app.tcp_presence" in " ".join(service.get("command") or []) else "chat"
            for name, service in compose["services"].items() if "build" in service}


def test_compose_runs_kraft_kafka_a_mongodb_replica_set_redis_presence_and_two_chat_nodes_behind_a_proxy(compose):
    services = compose["services"]
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and "KAFKA_CONTROLLER_QUORUM_VOTERS" in kafka
    assert not any("zookeeper" in name for name in services)
    assert "--replSet" in services["mongo"]["command"] and "rs.initiate" in " ".join(services["mongo"]["healthcheck"]["test"])
    assert services["redis"]["image"].startswith("redis:")
    roles = smooth_services(compose)
    assert sorted(roles.values()) == ["chat", "chat", "presence"]
    assert services["proxy"]["image"].startswith("haproxy:")


@pytest.mark.parametrize("role, required", [("chat", REQUIRED_CHAT), ("presence", REQUIRED_PRESENCE)])
def test_chat_and_presence_get_every_setting_they_need_and_no_unknown_name(compose, dockerfile, role, required):
    for name, service_role in smooth_services(compose).items():
        if service_role != role:
            continue
        env = service_env(compose, name, dockerfile)
        assert set(env) - SETTING_NAMES - {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"} == set(), name
        assert required - set(env) == set(), name


def test_every_value_is_one_the_settings_accept_and_production_choices_are_made(compose, dockerfile):
    for name in smooth_services(compose):
        env = service_env(compose, name, dockerfile)
        for secret in SECRETS:  # from the operator's environment, and required there
            assert re.fullmatch(r"\$\{" + secret + r":\?[^}]+\}", env[secret]), (name, secret)
        resolved = {key: _VARIABLE.sub(lambda m: "x" * 40 if m.group(1) in SECRETS else (m.group(2) or ""), value)
                    for key, value in env.items() if key in SETTING_NAMES}
        settings = Settings.from_env(resolved)
        assert settings.jwt_secret != DEV_JWT_SECRET
        assert settings.mongo_write_concern == "majority"
        assert "replicaSet=" in settings.mongo_url
        assert settings.bind_host == "0.0.0.0"
        assert settings.demo_enabled == "off"


def test_each_chat_node_is_named_and_runs_one_worker_so_the_proxy_can_pin_sessions(compose, dockerfile):
    chats = [name for name, role in smooth_services(compose).items() if role == "chat"]
    node_ids = [service_env(compose, name, dockerfile)["CHAT_NODE_ID"] for name in chats]
    assert len(set(node_ids)) == len(chats) == 2
    assert all(service_env(compose, name, dockerfile)["CHAT_WORKERS"] == "1" for name in chats)


def test_the_proxy_keeps_sockjs_sessions_on_the_node_that_set_their_cookie(compose):
    config = (REPO / "deploy/haproxy.cfg").read_text()
    assert re.search(r"^\s*cookie JSESSIONID prefix", config, re.M)
    sockjs = (REPO / "app/stomp/sockjs.py").read_text()
    assert 'set_cookie("JSESSIONID"' in sockjs  # the cookie the proxy routes on is the one the server sets
    chats = [name for name, role in smooth_services(compose).items() if role == "chat"]
    for name in chats:
        assert re.search(rf"^\s*server {name} {name}:8080 cookie \w+", config, re.M), name
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in compose["services"]["proxy"]["volumes"]


def test_the_dockerfile_is_multi_stage_and_runs_gunicorn_as_a_user_other_than_root(dockerfile):
    parts = stages(dockerfile)
    assert len(parts) >= 2 and all(re.match(r"FROM \S+ AS \S+", stage[0]) for stage in parts[:-1])
    final = parts[-1]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert final[-1] == 'CMD ["gunicorn", "-c", "gunicorn.conf.py"]'
    conf = (REPO / "gunicorn.conf.py").read_text()
    assert 'worker_class = "app.stomp.ws.StompWebSocketWorker"' in conf
    from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
    from gunicorn.workers.ggevent import GeventWorker

    from app.stomp.ws import StompWebSocketWorker

    assert issubclass(StompWebSocketWorker, GeventWebSocketWorker) and issubclass(StompWebSocketWorker, GeventWorker)
    for needed in ("COPY app app", "COPY workers workers", "COPY gunicorn.conf.py ./"):
        assert needed in final


def makefile_recipe(target_prefix: str) -> list[str]:
    """The command lines of the Makefile rule whose target starts with ``target_prefix``."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(target_prefix))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_the_dockerfile_installs_python_packages_as_the_makefile_does(dockerfile):
    (make_pip,) = [line for line in makefile_recipe("$(STAMP):") if " pip install " in line]
    make_flags = [word for word in make_pip.split() if word.startswith("--")]
    pip_lines = [line for stage in stages(dockerfile) for line in stage if " pip install " in line]
    assert len(pip_lines) == 1
    docker_words = pip_lines[0].split()
    assert all(flag in docker_words for flag in make_flags)
    # make installs requirements-dev.txt, which starts from requirements.txt: the image takes that part.
    assert docker_words[docker_words.index("-r") + 1].endswith("/requirements.txt")
    assert (REPO / "requirements-dev.txt").read_text().splitlines()[1] == "-r requirements.txt"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert all(stage[0].startswith(f"FROM python:{version}") for stage in stages(dockerfile) if "python:" in stage[0])


def test_the_dockerfile_installs_the_served_scripts_as_the_makefile_does(dockerfile):
    (make_npm,) = [line for line in makefile_recipe("$(STATICSTAMP):") if "npm install" in line]
    assert make_npm.startswith("cd $(STATIC) && ")
    (static_stage,) = [stage for stage in stages(dockerfile) if any("npm install" in line for line in stage)]
    assert f"RUN {make_npm.split('&& ', 1)[1]}" in static_stage
    assert "COPY static/package.json static/package-lock.json ./" in static_stage
    assert any(line.startswith("WORKDIR") and line.endswith("/static") for line in static_stage)
