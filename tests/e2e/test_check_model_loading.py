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


#: what the fake hub's API says of its datasets (`/api/datasets/{org}/{name}`): the card's `dataset_info` as the hub
#: returns it in `cardData` (one config, several with a `config_name` each, none)
DATASETS = {
    "org/rows": {"dataset_info": {"features": [{"name": "messages"}], "splits": [
        {"name": "train", "num_bytes": 2100, "num_examples": 5}, {"name": "test", "num_bytes": 800, "num_examples": 2}]}},
    "org/configs": {"dataset_info": [
        {"config_name": "default", "splits": [{"name": "train", "num_examples": 3}]},
        {"config_name": "big", "splits": [{"name": "train", "num_examples": 1000}]}]},
    "org/nocard": {},
}


class Hub(BaseHTTPRequestHandler):
    """`/{org}/{name}/resolve/{revision}/config.json` as huggingface.co answers it: `org/public` for anyone,
    `org/gated` with the right token only (401 GatedRepo without one, 403 GatedRepo with another), any other
    repository 401 RepoNotFound (the hub's answer to an anonymous request for a missing repo). And
    `/api/datasets/{org}/{name}` for the DATASETS above, any other 401 RepoNotFound."""

    seen: list[tuple[str, str, str | None]] = []

    def _answer(self, body: bool) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:2] == ["api", "datasets"]:
            return self._dataset("/".join(parts[2:4]), body)
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

    def _dataset(self, repo: str, body: bool) -> None:
        Hub.seen.append((self.command, f"datasets/{repo}", self.headers.get("Authorization")))
        if repo not in DATASETS:
            return self._error(401, "RepoNotFound", "Repository not found")
        info = json.dumps({"id": repo, "sha": hashlib.sha1(repo.encode()).hexdigest(), "private": False,
                           "cardData": DATASETS[repo], "siblings": [{"rfilename": "README.md"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(info)))
        self.end_headers()
        if body:
            self.wfile.write(info)

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


# --- hub datasets: their rows from the dataset card --------------------------------------------------------


def test_a_hub_datasets_rows_come_from_its_card(hub, monkeypatch) -> None:
    """huggingface_hub's dataset_info against the fake hub: the split's num_examples, a named config's, one shard
    of it; what the card cannot answer for (no such split, no card, a slice, no such dataset, offline) says why."""
    from huggingface_hub import constants

    from pipeline.checks import hub_rows

    monkeypatch.setattr(constants, "ENDPOINT", hub)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub_rows._ask.cache_clear()
    count = hub_rows.count
    assert count({"path": "org/rows"}) == hub_rows.Rows("org/rows", "train", "counted", 5)
    assert count({"path": "org/rows", "split": "test"}).rows == 2
    assert count({"path": "org/configs"}).rows == 3 and count({"path": "org/configs", "name": "big"}).rows == 1000
    assert count({"path": "org/configs", "name": "big", "shards": 3}).rows == 334  # ceil(1000 / 3): the largest shard
    assert count({"path": "org/rows", "split": "validation"}).state == "no-count"
    assert count({"path": "org/nocard"}).state == "no-count"
    assert count({"path": "org/rows", "split": "train[:10%]"}).state == "no-count"
    missing = count({"path": "org/missing"})
    assert missing.state == "not-found" and "'org/missing'" in missing.detail
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert count({"path": "org/rows"}) == hub_rows.Rows("org/rows", "train", "offline", detail="HF_HUB_OFFLINE is set")
    hub_rows._ask.cache_clear()


def test_batch_larger_than_a_hub_dataset_is_found_and_offline_it_is_said_not_counted(cli, env) -> None:
    """The real command line: a batch of 8 on a hub dataset of 5 rows warns, with where the count came from; a
    named config of 1,000 rows does not; offline nothing is counted, the facts say so, and nothing fails."""
    batch = ["--set", "datasets.0.path=org/rows", "--set", "micro_batch_size=2", "--set", "gradient_accumulation_steps=4"]
    proc = cli("check", TINY, *batch, env=env)
    (line,) = [ln for ln in proc.stdout.splitlines() if "batch-larger-than-dataset" in ln]
    assert proc.returncode == 0, proc.stderr
    assert "wants 8 sequences" in line and "at most 5 rows (org/rows train: 5 rows on the hub's dataset card)" in line
    assert "org/rows train: 5 rows on the hub's dataset card" in [ln.strip() for ln in proc.stdout.splitlines()]

    proc = cli("check", TINY, *batch, "--set", "datasets.0.path=org/configs", "--set", "datasets.0.name=big",
               "--format", "json", env=env)
    report = json.loads(proc.stdout)["configs"][0]
    assert report["facts"]["hub_data"] == [{"path": "org/configs", "split": "train", "state": "counted", "rows": 1000,
                                            "detail": ""}]
    assert "batch-larger-than-dataset" not in {f["rule"] for f in report["findings"]}

    proc = cli("check", TINY, *batch, env={**env, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and "batch-larger-than-dataset" not in proc.stdout
    assert "org/rows train: rows not counted (HF_HUB_OFFLINE is set)" in proc.stdout

