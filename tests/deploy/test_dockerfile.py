"""The Dockerfile read: it copies every package the distribution ships, its build context
(.dockerignore) lets those in, its base defaults to the public image users pull, and its
user agrees with the Deployment's. tests/node builds and runs it (on a Debian base)."""

import re
import tomllib
from pathlib import Path

from tests.deploy.conftest import one

REPO = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def copied_sources() -> list[str]:
    sources = []
    for op, rest in instructions():
        if op == "COPY" and not rest.startswith("--from"):
            sources.extend(rest.split()[:-1])
    return sources


def test_copies_every_shipped_package_and_what_pip_needs() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    includes = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in includes}
    sources = copied_sources()
    assert packages <= set(sources)
    assert {"pyproject.toml", project["project"]["readme"]} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such path"


def test_build_context_admits_the_copied_sources() -> None:
    rules = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [rule for rule in rules if rule and not rule.startswith("#")]
    assert rules[0] == "*"  # deny by default: no .venv, .git or caches in the context
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert set(copied_sources()) <= allowed


def test_base_image_and_user_agree_with_the_project_and_the_deployment(base) -> None:
    ops = instructions()
    # The base is a build argument (tests/node passes a Debian one); its default is public.
    args = dict(rest.split("=", 1) for op, rest in ops if op == "ARG" and "=" in rest)
    assert args.get("PYTHON_IMAGE") == "python:3.11-slim"
    bases = [rest.split()[0] for op, rest in ops if op == "FROM"]
    assert bases and all(image == "${PYTHON_IMAGE}" for image in bases)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == ">=3.11"
    (user,) = [rest for op, rest in ops if op == "USER"]
    uid, gid = (int(part) for part in user.split(":"))
    assert uid != 0
    pod = one(base, "Deployment", "oomdump-webhook")["spec"]["template"]["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
    run_steps = " ".join(rest for op, rest in ops if op == "RUN")
    assert re.search(rf"useradd .*--uid {uid}\b", run_steps)
    assert re.search(rf"groupadd .*--gid {gid}\b", run_steps)
