"""What injected watchers are told about notices: the webhook's Service URL and the CA
bundle beside the served pair, re-read as the certificates rotate; nothing without one."""

import json
from pathlib import Path

from tests.webhook.helpers import simple_pod
from tests.webhook.pki import create_ca
from tests.webhook.server import RunningWebhook
from webhook.app import ServerState
from webhook.config import InjectConfig
from webhook.inject import inject

URL = "https://oomdump-webhook.oomdump-system.svc:443/notice"


def injected(state: ServerState) -> tuple[dict, dict]:
    outcome = inject(simple_pod(), state.config, "shop")
    watcher = outcome.pod["spec"]["containers"][-1]
    status = json.loads(outcome.pod["metadata"]["annotations"]["oomdump.io/status"])
    return {e["name"]: e.get("value") for e in watcher["env"]}, status


def state_for(ca_file: Path) -> ServerState:
    config = InjectConfig(image="img", notify_off=f"off: no CA bundle in {ca_file} yet")
    return ServerState(config=config, notify_url=URL, notify_ca_file=ca_file)


def test_without_a_ca_bundle_watchers_get_no_notify_settings(tmp_path: Path) -> None:
    state = state_for(tmp_path / "ca.crt")
    state.check_files()
    env, status = injected(state)
    assert not {"NOTIFY_URL", "NOTIFY_TOKEN_FILE", "NOTIFY_CA"} & set(env)
    assert status["notify"] == f"off: cannot read {tmp_path / 'ca.crt'}: No such file or directory"


def test_the_bundle_is_given_to_watchers_and_follows_rotation(tmp_path: Path) -> None:
    first = create_ca(tmp_path / "one", "first CA").cert_path
    second = create_ca(tmp_path / "two", "second CA").cert_path
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(first.read_bytes())
    state = state_for(ca_file)
    state.check_files()
    env, status = injected(state)
    assert (env["NOTIFY_URL"], env["NOTIFY_CA"]) == (URL, first.read_text())
    assert env["NOTIFY_TOKEN_FILE"] == "/var/run/secrets/oomdump/token"
    assert status["notify"] == URL

    # A rotation keeps the old CA trusted beside the new one: both reach new watchers.
    ca_file.write_bytes(second.read_bytes() + first.read_bytes())
    state.check_files()
    assert injected(state)[0]["NOTIFY_CA"] == second.read_text() + first.read_text()

    # A half-written file is refused; the last good bundle stays.
    ca_file.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB")
    state.check_files()
    assert injected(state)[0]["NOTIFY_CA"] == second.read_text() + first.read_text()


def test_only_certificates_reach_the_environment(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "ca", "CA").cert_path
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(b"$(SECRET) junk before\n" + ca.read_bytes() + b"trailing junk\n")
    state = state_for(ca_file)
    state.check_files()
    assert injected(state)[0]["NOTIFY_CA"] == ca.read_text()


def test_a_webhook_without_api_credentials_refuses_notices(webhook: RunningWebhook) -> None:
    with webhook.client() as client:
        answer = client.post("/notice", content=b"{}", headers={"Content-Type": "application/json"})
    assert answer.status_code == 503
    assert answer.json() == {"error": "not-configured", "message": "this webhook serves no notices"}
