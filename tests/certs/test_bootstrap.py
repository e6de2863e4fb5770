"""`bootstrap`'s reconcile driver: the pure plan applied step by step, with re-reads.

The cluster here is MemoryCluster (see its docstring for why); files are real files and
TLS is real TLS.
"""

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from certs.assess import CA_CERT, TLS_CERT, TLS_KEY
from certs.bootstrap import BootstrapSettings, ReconcileError, reconcile, run_loop
from certs.material import IssueSettings
from certs.plan import WebhookConfigState
from tests.certs.material_helpers import CONFIG_NAME, NAMES, SETTINGS, START
from tests.certs.memory_cluster import MemoryCluster
from tests.certs.tls_probe import GREETING, handshake, tls_server

HOOKS = ("pods.oomdump.io", "pods-native.oomdump.io")


def empty_config() -> WebhookConfigState:
    return WebhookConfigState(dict.fromkeys(HOOKS, b""), "1")


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def settings(out: Path | None) -> BootstrapSettings:
    return BootstrapSettings(SETTINGS, CONFIG_NAME, out)


def test_first_run_creates_secret_sets_every_ca_bundle_and_writes_files(tmp_path: Path) -> None:
    cluster = MemoryCluster(webhook_config=empty_config())
    outcome = reconcile(
        cluster, settings(tmp_path), lambda: datetime.now(UTC)
    )  # TLS checks validity
    assert [line.split(" (")[0] for line in outcome.done] == [
        "created the secret",
        "set caBundle of pods-native.oomdump.io, pods.oomdump.io",
        "wrote the served files",
    ]
    stored = cluster.secret.data
    assert set(cluster.webhook_config.ca_bundles.values()) == {stored[CA_CERT]}
    for name in (CA_CERT, TLS_CERT, TLS_KEY):
        assert (tmp_path / name).read_bytes() == stored[name]
    with tls_server(tmp_path / TLS_CERT, tmp_path / TLS_KEY) as port:
        assert handshake(port, tmp_path / CA_CERT, NAMES[2]) == GREETING


def test_second_run_is_idempotent(tmp_path: Path) -> None:
    cluster = MemoryCluster(webhook_config=empty_config())
    reconcile(cluster, settings(tmp_path), at(START))
    before = (cluster.secret, cluster.webhook_config, list(cluster.calls))
    outcome = reconcile(cluster, settings(tmp_path), at(START + timedelta(days=1)))
    assert outcome.done == []
    assert (cluster.secret, cluster.webhook_config, cluster.calls) == before


def test_existing_secret_is_loaded_not_replaced(tmp_path: Path) -> None:
    cluster = MemoryCluster(webhook_config=empty_config())
    reconcile(cluster, settings(None), at(START))
    stored = cluster.secret
    outcome = reconcile(cluster, settings(tmp_path), at(START + timedelta(days=2)))
    assert cluster.secret == stored
    assert outcome.done == [
        "wrote the served files (ca.crt, tls.crt, tls.key differ from the secret)"
    ]
    assert (tmp_path / TLS_KEY).read_bytes() == stored.data[TLS_KEY]


def test_two_replicas_racing_to_create_end_with_one_ca(tmp_path: Path) -> None:
    cluster = MemoryCluster(webhook_config=empty_config())
    first_out, second_out = tmp_path / "a", tmp_path / "b"
    # Replica B runs a whole reconcile after A has seen no secret and before A's create lands.
    cluster.before_write = lambda: reconcile(cluster, settings(second_out), at(START))
    outcome = reconcile(cluster, settings(first_out), at(START))
    assert outcome.conflicts == 1
    assert cluster.calls.count("create_secret") == 2  # B's succeeded, A's got 409
    assert cluster.calls.count("set_ca_bundle") == 1  # A found the caBundle already right
    stored = cluster.secret.data
    for out in (first_out, second_out):
        assert (out / CA_CERT).read_bytes() == stored[CA_CERT]
        assert (out / TLS_CERT).read_bytes() == stored[TLS_CERT]


def test_overwritten_ca_bundle_is_restored(tmp_path: Path) -> None:
    cluster = MemoryCluster(webhook_config=empty_config())
    reconcile(cluster, settings(tmp_path), at(START))
    good = cluster.secret.data[CA_CERT]
    reverted = dict(cluster.webhook_config.ca_bundles, **{HOOKS[0]: b""})
    cluster.webhook_config = WebhookConfigState(reverted, "500")  # e.g. a GitOps sync
    outcome = reconcile(cluster, settings(tmp_path), at(START + timedelta(hours=1)))
    assert outcome.done == [f"set caBundle of {HOOKS[0]} (caBundle unset)"]
    assert set(cluster.webhook_config.ca_bundles.values()) == {good}


def test_renewal_replaces_the_served_pair_and_keeps_the_ca(tmp_path: Path) -> None:
    cluster = MemoryCluster(webhook_config=empty_config())
    reconcile(cluster, settings(tmp_path), at(START))
    first = cluster.secret.data
    outcome = reconcile(cluster, settings(tmp_path), at(START + timedelta(days=21)))
    assert outcome.done[0].startswith("stored a new serving pair")
    assert len(outcome.done) == 2 and outcome.done[1].startswith("wrote the served files")
    renewed = cluster.secret.data
    assert renewed[CA_CERT] == first[CA_CERT] and renewed[TLS_CERT] != first[TLS_CERT]
    assert (tmp_path / TLS_CERT).read_bytes() == renewed[TLS_CERT]


def test_ca_rotation_keeps_old_and_new_serving_certificates_trusted(tmp_path: Path) -> None:
    cluster = MemoryCluster(webhook_config=empty_config())
    old_out, new_out = tmp_path / "old", tmp_path / "new"
    # Real time, since the handshakes below check validity: the first CA is 201 of its
    # 300 days old now; its latest serving pair was renewed 5 days ago.
    now = datetime.now(UTC)
    reconcile(cluster, settings(None), at(now - timedelta(days=201)))
    renewal = reconcile(cluster, settings(old_out), at(now - timedelta(days=5)))
    assert renewal.done[0].startswith("stored a new serving pair")
    outcome = reconcile(cluster, settings(new_out), at(now))
    assert outcome.done[0].startswith("stored a new CA and serving pair")
    bundle = cluster.webhook_config.ca_bundles[HOOKS[0]]
    assert len(x509.load_pem_x509_certificates(bundle)) == 2
    trusted = tmp_path / "bundle.pem"
    trusted.write_bytes(bundle)
    # A replica still serving the old pair, and one serving the new: the API server
    # (trusting the caBundle) accepts both, so rotation drops no request.
    for out in (old_out, new_out):
        with tls_server(out / TLS_CERT, out / TLS_KEY) as port:
            assert handshake(port, trusted, NAMES[3]) == GREETING


def test_missing_webhook_configuration_is_reported_and_files_written(tmp_path: Path) -> None:
    cluster = MemoryCluster(webhook_config=None)
    outcome = reconcile(cluster, settings(tmp_path), at(START))
    assert outcome.waiting == ["MutatingWebhookConfiguration oomdump does not exist yet"]
    assert (tmp_path / TLS_CERT).read_bytes() == cluster.secret.data[TLS_CERT]


def test_a_writer_that_never_stops_fighting_is_an_error() -> None:
    class Fighting(MemoryCluster):
        def set_ca_bundle(self, bundle: bytes, webhooks: tuple[str, ...], version: str) -> None:
            # A controller that reverts the caBundle the moment anyone else touches it.
            self.webhook_config = WebhookConfigState(
                dict.fromkeys(HOOKS, b"x"), self._next_version()
            )
            super().set_ca_bundle(bundle, webhooks, version)

    with pytest.raises(ReconcileError, match="another writer keeps changing"):
        reconcile(Fighting(webhook_config=empty_config()), settings(None), at(START))


def test_loop_restores_drift_and_stops_when_asked(tmp_path: Path) -> None:
    cluster = MemoryCluster(webhook_config=empty_config())
    rounds: list[int] = []
    restored = threading.Event()

    def should_stop(_interval: float) -> bool:
        rounds.append(1)
        if len(rounds) == 1:  # between rounds, something reverts the caBundle
            cluster.webhook_config = WebhookConfigState(dict.fromkeys(HOOKS, b""), "900")
            return False
        restored.set()
        return True

    run_loop(cluster, settings(tmp_path), at(START), 0.01, should_stop)
    assert restored.is_set() and len(rounds) == 2
    assert set(cluster.webhook_config.ca_bundles.values()) == {cluster.secret.data[CA_CERT]}


def test_loop_survives_a_failing_round(caplog: pytest.LogCaptureFixture) -> None:
    class Flaky(MemoryCluster):
        failures = 1

        def read_secret(self):
            if self.failures:
                self.failures -= 1
                raise RuntimeError("API server unavailable")
            return super().read_secret()

    cluster = Flaky(webhook_config=empty_config())
    rounds = iter([False, True])
    run_loop(cluster, settings(None), at(START), 0.01, lambda _timeout: next(rounds))
    assert "reconcile failed" in caplog.text and "API server unavailable" in caplog.text
    assert cluster.secret is not None


def test_short_validities_converge_then_renew_pair_then_ca() -> None:
    """Seconds-long lifetimes (as an end-to-end rotation test uses) settle in one run."""
    short = IssueSettings(
        SETTINGS.service, SETTINGS.namespace, timedelta(seconds=30), timedelta(seconds=60)
    )
    quick = BootstrapSettings(short, CONFIG_NAME, None)
    cluster = MemoryCluster(webhook_config=empty_config())
    assert len(reconcile(cluster, quick, at(START)).done) == 2
    assert reconcile(cluster, quick, at(START + timedelta(seconds=15))).done == []
    first_ca = cluster.secret.data[CA_CERT]
    pair = reconcile(cluster, quick, at(START + timedelta(seconds=25))).done
    assert [line.split(" (")[0] for line in pair] == ["stored a new serving pair"]
    assert cluster.secret.data[CA_CERT] == first_ca
    rotated = reconcile(cluster, quick, at(START + timedelta(seconds=45))).done
    assert [line.split(" (")[0] for line in rotated] == [
        "stored a new CA and serving pair",
        f"set caBundle of {', '.join(sorted(HOOKS))}",
    ]
    assert cluster.secret.data[CA_CERT].startswith(b"-----BEGIN CERTIFICATE-----")
    assert cluster.secret.data[CA_CERT] != first_ca
