"""A model the run cannot load stops `smoke` and `train` before anything starts, with one line that says what
to do; `check` warns where it cannot ask. The hub here is a local HTTP server that answers as the Hugging Face
hub does (status codes and its X-Error-Code header), reached by the real huggingface_hub client over a real
socket through HF_ENDPOINT."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.core import models

TINY = "configs/tiny_cpu.yaml"
TOKEN = "hf_good_token"
#: what the fake hub serves as a public and a gated model's config.json: the tiny Llama's shape
CONFIG = json.dumps({**models.TINY_CONFIG, "vocab_size": models.TINY_VOCAB}).encode()


class Hub(BaseHTTPRequestHandler):
    """`/{org}/{name}/resolve/{revision}/config.json` as huggingface.co answers it: `org/public` for anyone,
    `org/gated` with the right token only (401 GatedRepo without one, 403 GatedRepo with another), any other
    repository 401 RepoNotFound (the hub's answer to an anonymous request for a missing repo)."""

    seen: list[tuple[str, str, str | None]] = []

    def _answer(self, body: bool) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        repo = "/".join(parts[:2])
        auth = self.headers.get("Authorization")
        Hub.seen.append((self.command, repo, auth))
        if parts[2:3] != ["resolve"] or parts[-1] != "config.json":
            return self._error(404, "EntryNotFound", "Entry not found")
        if repo == "org/gated" and auth != f"Bearer {TOKEN}":
            if auth is None:
                return self._error(401, "GatedRepo", "Access to model org/gated is restricted. You must have access "
                                                     "to it and be authenticated to access it. Please log in.")
            return self._error(403, "GatedRepo", "Access to model org/gated is restricted and you are not in the "
                                                 "authorized list. Visit https://huggingface.co/org/gated to ask for "
                                                 "access.")
        if repo not in ("org/public", "org/gated"):
            return self._error(401, "RepoNotFound", "Repository not found")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(CONFIG)))
        self.send_header("ETag", f'"{hashlib.sha1(CONFIG).hexdigest()}"')
        self.send_header("X-Repo-Commit", hashlib.sha1(repo.encode()).hexdigest())
        self.end_headers()
        if body:
            self.wfile.write(CONFIG)

    def _error(self, status: int, code: str, message: str) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hub() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def env(tmp_path: Path, hub: str) -> dict[str, str]:
    """The hub is the fake one, and nothing is cached: an empty Hugging Face home and pipeline cache."""
    out = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE")}
    out.update(HF_ENDPOINT=hub, HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf"),
               PIPELINE_CACHE=str(tmp_path / "cache"), PIPELINE_RUNS_DIR=str(tmp_path / "runs"))
    return out


def lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() + proc.stdout.splitlines() if "model-" in line]


def test_a_model_not_on_the_hub_stops_smoke_with_one_line(cli, env, tmp_path) -> None:
    proc = cli("smoke", TINY, "--set", "base_model=org/misspelt", env=env)
    assert proc.returncode == 2, proc.stderr
    (line,) = lines(proc)
    assert line.startswith(f"{TINY}:3: model-unavailable: base_model 'org/misspelt' is not on the Hugging Face hub")
    assert "fix the id" in line and "HF_TOKEN" in line
    assert not (tmp_path / "runs").exists()  # nothing written


def test_a_gated_model_without_a_token_says_where_to_accept_the_licence(cli, env, hub) -> None:
    proc = cli("train", TINY, "--set", "base_model=org/gated", env=env)
    assert proc.returncode == 2, proc.stderr
    (line,) = lines(proc)
    assert "model-unavailable" in line and "is gated" in line
    assert f"accept its licence at {hub}/org/gated" in line and "set HF_TOKEN" in line
    assert ("GET", "org/gated", None) in Hub.seen or ("HEAD", "org/gated", None) in Hub.seen


def test_a_gated_model_with_a_token_that_has_no_access(cli, env) -> None:
    proc = cli("smoke", TINY, "--set", "base_model=org/gated", env={**env, "HF_TOKEN": "hf_someone_else"})
    assert proc.returncode == 2
    (line,) = lines(proc)
    assert "the token in HF_TOKEN has no access yet" in line
    assert ("HEAD", "org/gated", "Bearer hf_someone_else") in Hub.seen  # the token is read and sent


def test_with_the_token_the_hub_answers_and_the_shape_is_kept_for_offline_checks(cli, env) -> None:
    """The config.json the hub returns gives the shape (parameters, estimate) and is kept: offline later, the
    shape is still known, and `check` warns that the weights are not here (it cannot ask)."""
    proc = cli("check", TINY, "--set", "base_model=org/gated", "--format", "json", env={**env, "HF_TOKEN": TOKEN})
    report = json.loads(proc.stdout)["configs"][0]
    rules = {f["rule"] for f in report["findings"]}
    assert proc.returncode == 0 and not rules & {"model-unavailable", "model-offline", "architecture-unknown"}
    assert report["facts"]["params"]["total"] == 354_624  # the tiny Llama's, from the served config.json

    offline = {**env, "HF_HUB_OFFLINE": "1"}
    proc = cli("check", TINY, "--set", "base_model=org/gated", "--format", "json", env=offline)
    report = json.loads(proc.stdout)["configs"][0]
    assert proc.returncode == 0 and report["facts"]["params"]["total"] == 354_624
    (warning,) = [f for f in report["findings"] if f["rule"] == "model-offline"]
    assert warning["severity"] == "warning" and "HF_HUB_OFFLINE" in warning["message"]


def test_offline_and_not_cached_stops_smoke_and_names_both_ways_on(cli, env) -> None:
    proc = cli("smoke", "configs/lora_style_transfer.yaml", env={**env, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    (line,) = lines(proc)
    assert "model-offline" in line and "HF_TOKEN" in line
    assert "--set base_model=pipeline://random/llama-3.1-8b" in line


def test_no_answer_from_the_hub_is_said_as_such(cli, env) -> None:
    proc = cli("smoke", TINY, "--set", "base_model=org/public", env={**env, "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert proc.returncode == 2
    (line,) = lines(proc)
    assert "model-offline" in line and "no answer from http://127.0.0.1:9" in line


def test_local_folders_without_config_or_weights(cli, env, tmp_path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    proc = cli("smoke", TINY, "--set", f"base_model={empty}", env=env)
    assert proc.returncode == 2 and "has no config.json" in lines(proc)[0]

    (empty / "config.json").write_bytes(CONFIG)
    proc = cli("smoke", TINY, "--set", f"base_model={empty}", env=env)
    assert proc.returncode == 2 and "no weights" in lines(proc)[0]

    proc = cli("smoke", TINY, "--set", f"base_model={tmp_path / 'nowhere'}", env=env)
    assert proc.returncode == 2 and "is a path that does not exist" in lines(proc)[0]
