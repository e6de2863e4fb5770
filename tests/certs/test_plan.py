"""The pure core: observed Secret, webhook configuration and files -> next actions."""

from datetime import timedelta

import pytest
from cryptography import x509

from certs.assess import CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, Verdict, assess
from certs.material import fresh_material
from certs.plan import (
    CreateSecret,
    Observed,
    RenewSecret,
    SetCABundle,
    WebhookConfigState,
    WriteFiles,
    plan,
)
from tests.certs.material_helpers import CONFIG_NAME, NAMES, SETTINGS, START, config, issue, secret

LATER = START + timedelta(days=5)


def served(data: dict[str, bytes]) -> dict[str, bytes | None]:
    return {name: data[name] for name in (CA_CERT, TLS_CERT, TLS_KEY)}


def test_no_secret_means_create_it_and_nothing_else() -> None:
    result = plan(Observed(None, config(b"")), NAMES, CONFIG_NAME, START)
    assert result.actions == [CreateSecret("no secret yet")]


def test_fresh_secret_sets_every_unset_ca_bundle_then_writes_files() -> None:
    data = issue()
    files = {CA_CERT: None, TLS_CERT: None, TLS_KEY: None}
    observed = Observed(secret(data), config(b"", "a.oomdump.io", "b.oomdump.io"), files)
    actions = plan(observed, NAMES, CONFIG_NAME, LATER).actions
    assert actions == [
        SetCABundle(data[CA_CERT], ("a.oomdump.io", "b.oomdump.io"), "7", "caBundle unset"),
        WriteFiles(served(data), "ca.crt, tls.crt, tls.key differ from the secret"),
    ]


def test_everything_current_means_nothing_to_do() -> None:
    data = issue()
    observed = Observed(secret(data), config(data[CA_CERT]), served(data))
    assert plan(observed, NAMES, CONFIG_NAME, LATER).actions == []


def test_overwritten_ca_bundle_is_restored_only_where_it_drifted() -> None:
    data = issue()
    bundles = {"a.oomdump.io": data[CA_CERT], "b.oomdump.io": b"something a GitOps tool wrote"}
    observed = Observed(secret(data), WebhookConfigState(bundles, "9"), None)
    assert plan(observed, NAMES, CONFIG_NAME, LATER).actions == [
        SetCABundle(data[CA_CERT], ("b.oomdump.io",), "9", "caBundle differs from the secret's CA")
    ]


def test_missing_webhook_configuration_is_waited_for_and_files_still_written() -> None:
    data = issue()
    result = plan(Observed(secret(data), None, {}), NAMES, CONFIG_NAME, LATER)
    assert result.actions == [
        WriteFiles(served(data), "ca.crt, tls.crt, tls.key differ from the secret")
    ]
    assert result.waiting == ["MutatingWebhookConfiguration oomdump does not exist yet"]


def test_serving_pair_is_renewed_once_under_a_third_of_validity_is_left() -> None:
    data = issue()  # serving pair valid 30 days (+5 min back-dating)
    observed = Observed(secret(data, "4"), config(data[CA_CERT]), None)
    assert plan(observed, NAMES, CONFIG_NAME, START + timedelta(days=19)).actions == []
    actions = plan(observed, NAMES, CONFIG_NAME, START + timedelta(days=21)).actions
    assert len(actions) == 1
    renew = actions[0]
    assert isinstance(renew, RenewSecret)
    assert (renew.verdict, renew.resource_version) == (Verdict.NEW_SERVING_PAIR, "4")
    assert "under a third of its validity left" in renew.reason


def test_ca_is_rotated_once_under_a_third_of_its_validity_is_left() -> None:
    data = issue()  # CA valid 300 days
    at = START + timedelta(days=201)
    renewed_pair = fresh_material(data, Verdict.NEW_SERVING_PAIR, NAMES, SETTINGS, at)
    observed = Observed(secret(renewed_pair), config(data[CA_CERT]), None)
    (action,) = plan(observed, NAMES, CONFIG_NAME, at).actions
    assert isinstance(action, RenewSecret)
    assert action.verdict is Verdict.NEW_CA
    assert action.reason.startswith("the CA expires")


@pytest.mark.parametrize(
    ("break_it", "verdict", "reason"),
    [
        (lambda d: d.pop(CA_KEY), Verdict.NEW_CA, "the secret lacks ca.key"),
        (lambda d: d.update({CA_CERT: b"not pem"}), Verdict.NEW_CA, "the stored CA is unreadable"),
        (lambda d: d.update({CA_KEY: issue()[CA_KEY]}), Verdict.NEW_CA, "ca.key does not belong"),
        (lambda d: d.update({CA_CERT: d[TLS_CERT]}), Verdict.NEW_CA, "is not a CA"),
        (lambda d: d.update({TLS_CERT: b"junk"}), Verdict.NEW_SERVING_PAIR, "unreadable"),
        (
            lambda d: d.update({TLS_KEY: issue()[TLS_KEY]}),
            Verdict.NEW_SERVING_PAIR,
            "tls.key does not belong to tls.crt",
        ),
    ],
)
def test_broken_secret_is_reissued_with_the_reason(break_it, verdict, reason) -> None:
    data = issue()
    break_it(data)
    found = assess(data, NAMES, LATER)
    assert found.verdict is verdict
    assert reason in found.reason


def test_pair_from_another_ca_is_reissued() -> None:
    data, other = issue(), issue()
    data[TLS_CERT], data[TLS_KEY] = other[TLS_CERT], other[TLS_KEY]
    found = assess(data, NAMES, LATER)
    assert (found.verdict, found.reason) == (
        Verdict.NEW_SERVING_PAIR,
        "tls.crt was not issued by the current CA",
    )


def test_pair_for_another_service_name_is_reissued() -> None:
    data = issue()
    renamed = [name.replace("oomdump-webhook", "hook") for name in NAMES]
    found = assess(data, renamed, LATER)
    assert found.verdict is Verdict.NEW_SERVING_PAIR
    assert "does not name hook" in found.reason


def test_new_ca_keeps_the_old_ca_in_the_bundle_while_it_is_valid() -> None:
    first = issue()
    at = START + timedelta(days=250)
    rotated = fresh_material(first, Verdict.NEW_CA, NAMES, SETTINGS, at)
    cas = x509.load_pem_x509_certificates(rotated[CA_CERT])
    assert len(cas) == 2
    assert cas[1] == x509.load_pem_x509_certificate(first[CA_CERT])
    x509.load_pem_x509_certificate(rotated[TLS_CERT]).verify_directly_issued_by(cas[0])
    assert assess(rotated, NAMES, at).verdict is Verdict.KEEP
    # Once the old CA has expired it leaves the bundle at the next rotation.
    after_first_expired = START + timedelta(days=400)
    again = fresh_material(rotated, Verdict.NEW_CA, NAMES, SETTINGS, after_first_expired)
    kept = x509.load_pem_x509_certificates(again[CA_CERT])
    assert len(kept) == 2
    assert kept[1] == cas[0]
    assert cas[1] not in kept


def test_new_serving_pair_keeps_ca_and_bundle() -> None:
    first = issue()
    renewed = fresh_material(first, Verdict.NEW_SERVING_PAIR, NAMES, SETTINGS, LATER)
    assert renewed[CA_CERT] == first[CA_CERT] and renewed[CA_KEY] == first[CA_KEY]
    assert renewed[TLS_CERT] != first[TLS_CERT] and renewed[TLS_KEY] != first[TLS_KEY]
    assert assess(renewed, NAMES, LATER).verdict is Verdict.KEEP


def test_serving_certificate_never_outlives_its_ca() -> None:
    from certs.material import IssueSettings

    long_leaf = IssueSettings(
        SETTINGS.service, SETTINGS.namespace, timedelta(days=300), timedelta(days=300)
    )
    data = issue(settings=long_leaf)
    ca = x509.load_pem_x509_certificate(data[CA_CERT])
    leaf = x509.load_pem_x509_certificate(data[TLS_CERT])
    assert leaf.not_valid_after_utc <= ca.not_valid_after_utc
