"""Settings: one typed object, read once from an explicit environment mapping."""

import dataclasses

import pytest

from app.settings import DEV_JWT_SECRET, Settings, SettingsError, markdown_table


def test_defaults_match_the_documented_ports():
    settings = Settings.from_env({})
    assert (settings.chat_http_port, settings.presence_tcp_port, settings.presence_http_port) == (8080, 10001, 8088)
    assert settings.jwt_secret == DEV_JWT_SECRET and settings.uses_dev_secret


def test_values_are_parsed_to_their_declared_types():
    settings = Settings.from_env({"CHAT_HTTP_PORT": "9000", "SERVICE_TIMEOUT_S": "0.5", "MONGO_URL": "mongodb://x"})
    assert settings.chat_http_port == 9000
    assert settings.service_timeout_s == 0.5
    assert settings.mongo_url == "mongodb://x"


def test_empty_values_fall_back_to_defaults():
    assert Settings.from_env({"CHAT_HTTP_PORT": ""}).chat_http_port == 8080


@pytest.mark.parametrize("env", [{"CHAT_HTTP_PORT": "eighty"}, {"CHAT_HTTP_PORT": "0"}, {"STOMP_MAX_FRAME_BYTES": "10"}])
def test_bad_values_are_refused_with_the_variable_name(env):
    with pytest.raises(SettingsError, match=next(iter(env))):
        Settings.from_env(env)


def test_from_env_reads_only_the_mapping_given(monkeypatch):
    monkeypatch.setenv("CHAT_HTTP_PORT", "1234")
    assert Settings.from_env({}).chat_http_port == 8080


def test_as_environ_round_trips():
    settings = Settings.from_env({"CHAT_HTTP_PORT": "9001", "REDIS_URL": "redis://h:1/0"})
    assert Settings.from_env(settings.as_environ()) == settings


def test_derived_values_follow_overrides():
    settings = Settings.from_env({}, redis_url="redis://a/0", chat_http_port=9100)
    assert settings.effective_presence_redis_url == "redis://a/0"
    assert settings.effective_chat_server_url == "http://127.0.0.1:9100"
    assert settings.upload_type_prefixes[0] == "image/"


def test_every_setting_is_in_the_generated_table():
    table = markdown_table()
    for spec in dataclasses.fields(Settings):
        assert f"`{spec.metadata['env']}`" in table
    assert DEV_JWT_SECRET not in table
