"""The annotation registry: bounds, normalization, refusal messages and the README table."""

import posixpath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.annotations import BY_KEY, REGISTRY, InvalidAnnotation, env_overrides
from webhook.config import DefaultsError, parse_defaults

ACCEPTED = [
    ("oomdump.io/critical", "1", "1"),
    ("oomdump.io/critical", "99", "99"),
    ("oomdump.io/critical", "07", "7"),
    ("oomdump.io/cooldown", "1s", "1s"),
    ("oomdump.io/cooldown", "24h", "24h"),
    ("oomdump.io/cooldown", "1m30s", "1m30s"),
    ("oomdump.io/watch-time", "5ms", "5ms"),
    ("oomdump.io/watch-time", "10s", "10s"),
    ("oomdump.io/watch-time", "0.5s", "0.5s"),
    ("oomdump.io/ports", "6060", "6060"),
    ("oomdump.io/ports", "1,65535", "1,65535"),
    ("oomdump.io/ports", " 8080 , 6060,8080", "8080,6060"),
    ("oomdump.io/bucket", "abc", "abc"),
    ("oomdump.io/bucket", "my.team-dumps.2024", "my.team-dumps.2024"),
    ("oomdump.io/bucket", "a" * 63, "a" * 63),
    ("oomdump.io/prefix", "", ""),
    ("oomdump.io/prefix", "prod", "prod"),
    ("oomdump.io/prefix", "team-a/shop_1/v2.1/", "team-a/shop_1/v2.1/"),
    ("oomdump.io/prefix", ".hidden/...dots/", ".hidden/...dots/"),
    ("oomdump.io/prefix", "p" * 512, "p" * 512),
    ("oomdump.io/inject", "enabled", "enabled"),
    ("oomdump.io/inject", "disabled", "disabled"),
]

REFUSED = [
    ("oomdump.io/critical", "0", "1 to 99"),
    ("oomdump.io/critical", "100", "1 to 99"),
    ("oomdump.io/critical", "-5", "1 to 99"),
    ("oomdump.io/critical", "70%", "1 to 99"),
    ("oomdump.io/critical", "7.5", "1 to 99"),
    ("oomdump.io/critical", "", "1 to 99"),
    ("oomdump.io/cooldown", "999ms", "1s to 24h"),
    ("oomdump.io/cooldown", "25h", "1s to 24h"),
    ("oomdump.io/cooldown", "30", "1s to 24h"),
    ("oomdump.io/cooldown", "soon", "1s to 24h"),
    ("oomdump.io/watch-time", "4ms", "5ms to 10s"),
    ("oomdump.io/watch-time", "11s", "5ms to 10s"),
    ("oomdump.io/watch-time", " 100ms", "5ms to 10s"),
    ("oomdump.io/ports", "0", "1 to 65535"),
    ("oomdump.io/ports", "65536", "1 to 65535"),
    ("oomdump.io/ports", "80,,81", "1 to 65535"),
    ("oomdump.io/ports", "http", "1 to 65535"),
    ("oomdump.io/ports", "", "1 to 65535"),
    ("oomdump.io/bucket", "ab", "3-63"),
    ("oomdump.io/bucket", "a" * 64, "3-63"),
    ("oomdump.io/bucket", "Team-Dumps", "lowercase"),
    ("oomdump.io/bucket", "-dumps", "starting and ending"),
    ("oomdump.io/bucket", "dumps.", "starting and ending"),
    ("oomdump.io/bucket", "my..dumps", "S3 bucket name"),
    ("oomdump.io/bucket", "my-.dumps", "S3 bucket name"),
    ("oomdump.io/bucket", "my_dumps", "S3 bucket name"),
    ("oomdump.io/bucket", "10.0.0.1", "not an IP address"),
    ("oomdump.io/prefix", "p" * 513, "at most 512"),
    # Out of DUMP_DIR on disk and into another namespace's keys in a shared bucket.
    ("oomdump.io/prefix", "../../x/", "`..` segment"),
    ("oomdump.io/prefix", "a/../../b/", "`..` segment"),
    ("oomdump.io/prefix", "..", "`..` segment"),
    ("oomdump.io/prefix", "/abs/", "no leading `/`"),
    ("oomdump.io/prefix", "/", "no leading `/`"),
    ("oomdump.io/prefix", "a//b/", "no empty (`//`)"),
    ("oomdump.io/prefix", "./a/", "`.`"),
    ("oomdump.io/prefix", "a/./", "`.`"),
    # The kubelet would expand $(VAR) from the container's environment.
    ("oomdump.io/prefix", "$(AWS_SECRET_ACCESS_KEY)/", "letters, digits"),
    ("oomdump.io/prefix", "team a/", "letters, digits"),
    ("oomdump.io/prefix", "ünïcode/", "letters, digits"),
    ("oomdump.io/prefix", "a\\b/", "letters, digits"),
    ("oomdump.io/prefix", "line\nbreak", "letters, digits"),
    ("oomdump.io/prefix", "tab\there", "letters, digits"),
    ("oomdump.io/inject", "true", "enabled or disabled"),
    ("oomdump.io/inject", "Disabled", "enabled or disabled"),
]


@pytest.mark.parametrize(("key", "value", "normalized"), ACCEPTED)
def test_accepted_values_are_normalized(key: str, value: str, normalized: str) -> None:
    assert BY_KEY[key].validate(value) == normalized


@pytest.mark.parametrize(("key", "value", "allowed"), REFUSED)
def test_refusals_name_annotation_value_and_range(key: str, value: str, allowed: str) -> None:
    with pytest.raises(InvalidAnnotation) as caught:
        BY_KEY[key].validate(value)
    message = str(caught.value)
    assert key in message
    assert repr(value[:37]).rstrip("'") in message
    assert allowed in message


def test_long_values_are_shortened_in_the_message() -> None:
    with pytest.raises(InvalidAnnotation) as caught:
        BY_KEY["oomdump.io/prefix"].validate("x" * 600)
    assert len(str(caught.value)) < 200
    assert caught.value.value == "x" * 600


def test_env_overrides_maps_annotations_to_watcher_variables() -> None:
    annotations = {
        "oomdump.io/critical": "80",
        "oomdump.io/ports": "6060",
        "oomdump.io/inject": "enabled",
        "oomdump.io/status": "{}",
        "oomdump.io/unknown-key": "whatever",
        "other.example/critical": "500",
    }
    assert env_overrides(annotations) == {"CRITICAL": "80", "PPROF_PORTS": "6060"}


def test_every_env_annotation_is_unique_and_namespaced() -> None:
    keys = [entry.key for entry in REGISTRY]
    envs = [entry.env for entry in REGISTRY if entry.env]
    assert len(set(keys)) == len(keys)
    assert len(set(envs)) == len(envs)
    assert all(key.startswith("oomdump.io/") for key in keys)
    for entry in REGISTRY:  # each documented example is itself valid
        entry.validate(entry.example)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab./-_$ \\\n\x00é"), max_size=12))
def test_an_accepted_prefix_stays_inside_the_spool_and_its_key_space(value: str) -> None:
    """The watcher writes DUMP_DIR/{prefix}{namespace}/..., then uploads that key."""
    try:
        prefix = BY_KEY["oomdump.io/prefix"].validate(value)
    except InvalidAnnotation:
        return
    key = f"{prefix}shop/web-1/dump.pb.gz"
    on_disk = posixpath.join("/tmp/oomdump", key)
    assert posixpath.normpath(on_disk) == on_disk  # no `..`, `.`, `//` or absolute escape
    assert on_disk.startswith("/tmp/oomdump/")
    assert "$" not in key and key.isascii() and key.isprintable()


def test_an_invalid_prefix_in_the_defaults_file_is_refused() -> None:
    with pytest.raises(DefaultsError, match=r"env.S3_PREFIX='../x/': at most 512"):
        parse_defaults("env: {S3_PREFIX: ../x/}", "defaults.yaml")
