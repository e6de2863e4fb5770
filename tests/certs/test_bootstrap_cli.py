"""`python -m certs bootstrap` refuses bad input and unreachable clusters with a reason.

Only what needs no API server is tested here. Against a real kube-apiserver, tests/e2e runs
the CLI in two ways. test_certs_bootstrap.py, as the cluster admin (`system:masters`, so
RBAC never refuses it): the Secret created, the caBundle patched and restored after an
overwrite, the serving pair renewed by the loop. test_certs_rbac.py, with `deploy/`
installed and a token issued for its ServiceAccount, so only the RBAC in `deploy/` grants
anything: the first install, a 403 for each granted verb taken away, a CA rotation by the
reconcile loop, and two replica processes whose creates meet at a barrier, one answered 409.
Other interleavings of two replicas (a stale resourceVersion on update, a writer that never
stops) run only against the in-memory cluster in test_bootstrap.py.
"""

import socket
from pathlib import Path

import pytest

from certs.__main__ import main


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe closes


def kubeconfig_for(server: str, folder: Path) -> Path:
    path = folder / "kubeconfig"
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"""
    )
    return path


def run(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exit_:  # argparse refuses malformed flag values itself
        return int(exit_.code or 0)


def test_unreachable_api_server_is_a_clear_error(tmp_path, capsys) -> None:
    kubeconfig = kubeconfig_for(f"https://127.0.0.1:{closed_port()}", tmp_path)
    code = run(["bootstrap", "--kubeconfig", str(kubeconfig), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "reading Secret oomdump-system/oomdump-webhook-tls" in err
    assert "cannot reach the API server" in err
    assert not (tmp_path / "o").exists()


def test_missing_kubeconfig_is_a_clear_error(tmp_path, capsys) -> None:
    assert run(["bootstrap", "--kubeconfig", str(tmp_path / "absent")]) == 2
    assert "no usable Kubernetes credentials" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "0s"], "longer than zero"),
        (["--interval", "often"], "not a Go-style duration"),
        (["--validity", "2d", "--ca-validity", "1d"], "CA validity"),
        (["--service", "UPPER"], "not a DNS-1123 label"),
    ],
)
def test_bad_flags_are_refused_with_a_reason(tmp_path, capsys, args, message) -> None:
    kubeconfig = kubeconfig_for(f"https://127.0.0.1:{closed_port()}", tmp_path)
    assert run(["bootstrap", "--kubeconfig", str(kubeconfig), *args]) == 2
    assert message in capsys.readouterr().err
