"""The pipeline's image: the CPU flavour of docker/Dockerfile, built and run here as its non-root user.

The image is built from the local Debian base (`.ci/docker-setup.sh` makes it) and the wheelhouse
(`pip download -r requirements.lock -d wheelhouse`), or taken prebuilt from $PIPELINE_IMAGE.
docs/docker-and-nix.md shows the same `docker build` and `docker run` lines these tests use.
Without an engine (or the base, or the wheelhouse) the tests skip with the reason; with
PIPELINE_DOCKER_REQUIRED=1 (set by `nox -s container`, and by .ci/run around `nox -s tests`) they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from support import ROOT

DOCS = ROOT / "docs" / "docker-and-nix.md"
CPU_TAG = "finetune-pipeline:cpu"
CPU_BUILD_ARGS = {"BASE_IMAGE": "local/debian:bookworm", "WHEELHOUSE": "wheelhouse"}
# Nothing outside the package registries is reachable from a container: keep the hub and telemetry off.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1"}
SMOKE_TIMEOUT_S = 900
#: set by .ci/run, which builds $PIPELINE_IMAGE beside the tests: the file the build writes its exit status to
BUILD_STATUS_ENV = "PIPELINE_IMAGE_BUILD_STATUS"
BUILD_WAIT_S = 1800


def docker_build_line(tag: str = CPU_TAG, build_args: dict[str, str] = CPU_BUILD_ARGS) -> str:
    args = " ".join(f"--build-arg {k}={v}" for k, v in build_args.items())
    return f"docker build -f docker/Dockerfile {args} -t {tag} ."


def docker_run_line(command: list[str], volumes: dict[str, str], env: dict[str, str], user: str = "") -> str:
    """The `docker run` line a user types for what run_in_image() does (host paths relative to $PWD)."""
    parts = ["docker run --rm"] + ([f"--user {user}"] if user else [])
    parts += [f"-e {k}={v}" for k, v in env.items()]
    parts += [f'-v "$PWD/{host}:{inside}"' for host, inside in volumes.items()]
    return " ".join(parts + [CPU_TAG, *command])


# What the tests run in the image, in the user's words; the docs must show each of these lines.
VERSION = ["--version"]
CHECK = ["check", "configs/tiny_cpu.yaml"]
SMOKE = ["smoke"]
CHECK_VOLUMES = {"configs": "/work/configs:ro", "data": "/work/data:ro"}
SMOKE_VOLUMES = {"runs": "/work/runs"}
# The smoke runs as the host user who owns ./runs, so that what it writes is theirs.
SMOKE_USER = '"$(id -u):$(id -g)"'


def wait_for_the_build(status: Path, timeout: float = BUILD_WAIT_S) -> None:
    """Wait until `status` holds the exit status of the image build running beside the tests; fail, naming the
    build's log (`<status>.log`), if it is not 0 or has not come within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (status.is_file() and status.read_text().strip()):
        if time.monotonic() > deadline:
            pytest.fail(f"the image build beside the tests did not end within {timeout:.0f} s (log: {status}.log)")
        time.sleep(2)
    code = status.read_text().strip()
    if code != "0":
        pytest.fail(f"the image build beside the tests failed with exit {code} (log: {status}.log)")


def test_the_wait_for_the_image_build_ends_on_its_status(tmp_path):
    status = tmp_path / "image.status"
    with pytest.raises(pytest.fail.Exception, match=r"did not end within 0 s \(log: .*image.status.log\)"):
        wait_for_the_build(status, timeout=0)
    status.write_text("1\n")
    with pytest.raises(pytest.fail.Exception, match="failed with exit 1"):
        wait_for_the_build(status, timeout=0)
    status.write_text("0\n")
    wait_for_the_build(status, timeout=0)


def unavailable(reason: str) -> None:
    if os.environ.get("PIPELINE_DOCKER_REQUIRED") == "1":
        pytest.fail(f"{reason} (PIPELINE_DOCKER_REQUIRED=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine():
    try:
        import docker
    except ImportError:
        unavailable("the docker SDK (installed with testcontainers) is not importable")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # any failure to reach the daemon means there is no engine to test with
        unavailable(f"no Docker engine answers: {exc}")
    # No registry is reachable here, so testcontainers' reaper image cannot be pulled; `with` cleans up.
    from testcontainers.core.config import testcontainers_config

    testcontainers_config.ryuk_disabled = True
    return client


@pytest.fixture(scope="session")
def image(engine) -> str:
    """$PIPELINE_IMAGE if set (once its build beside the tests, if any, has ended: see BUILD_STATUS_ENV), else
    the CPU flavour built now (Docker's layer cache makes a rebuild quick)."""
    import docker.errors

    given = os.environ.get("PIPELINE_IMAGE")
    if given:
        if os.environ.get(BUILD_STATUS_ENV):
            wait_for_the_build(Path(os.environ[BUILD_STATUS_ENV]))
        try:
            engine.images.get(given)
        except docker.errors.ImageNotFound:
            pytest.fail(f"PIPELINE_IMAGE={given} is not an image this engine has; build it first")
        return given
    try:
        engine.images.get(CPU_BUILD_ARGS["BASE_IMAGE"])
    except docker.errors.ImageNotFound:
        unavailable(f"the base image {CPU_BUILD_ARGS['BASE_IMAGE']} is missing; run .ci/docker-setup.sh")
    if not any((ROOT / "wheelhouse").glob("torch-*.whl")):
        unavailable("wheelhouse/ holds no torch wheel; run: pip download -r requirements.lock -d wheelhouse")

    from testcontainers.core.image import DockerImage

    DockerImage(
        path=ROOT,
        dockerfile_path="docker/Dockerfile",
        tag=CPU_TAG,
        clean_up=False,
        buildargs=CPU_BUILD_ARGS,
        rm=True,
    ).build()
    return CPU_TAG


def run_in_image(
    image: str,
    command: list[str],
    *,
    volumes: dict[Path, str] | None = None,
    env: dict[str, str] | None = None,
    entrypoint: list[str] | None = None,
    user: str | None = None,
    workdir: str | None = None,
    timeout: int = 300,
    network: str | None = None,
) -> tuple[int, str]:
    """Run one container to completion; return its exit code and its combined output."""
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(image).with_command(command).with_envs(**OFFLINE_ENV, **(env or {}))
    for host, inside in (volumes or {}).items():
        path, _, mode = inside.partition(":")
        container = container.with_volume_mapping(host, path, mode or "rw")
    extra = {}
    if entrypoint is not None:
        extra["entrypoint"] = entrypoint
    if user is not None:
        extra["user"] = user
    if workdir is not None:
        extra["working_dir"] = workdir
    if network is not None:
        extra["network_mode"] = network
    container = container.with_kwargs(**extra)
    with container:
        result = container.get_wrapped_container().wait(timeout=timeout)
        stdout, stderr = container.get_logs()
    return int(result["StatusCode"]), (stdout + stderr).decode(errors="replace")


def image_user(image: str) -> tuple[int, int]:
    code, out = run_in_image(image, ["-c", "echo $(id -u) $(id -g)"], entrypoint=["sh"])
    assert code == 0, out
    uid, gid = out.split()
    return int(uid), int(gid)


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


@pytest.mark.docker
def test_image_runs_as_a_non_root_user(image):
    uid, gid = image_user(image)
    assert uid != 0 and gid != 0
    code, out = run_in_image(image, ["-c", "id -un; echo $HOME; test -w /work && echo work-writable"],
                             entrypoint=["sh"])
    assert code == 0, out
    assert out.split() == ["pipeline", "/home/pipeline", "work-writable"]


@pytest.mark.docker
def test_image_holds_exactly_the_locked_versions_on_the_locked_python(image):
    code, out = run_in_image(
        image,
        ["-c", "import json, platform, importlib.metadata as m; print(json.dumps({"
               "'python': platform.python_version(), "
               "'dists': {d.metadata['Name']: d.version for d in m.distributions()}}))"],
        entrypoint=["python"],
    )
    assert code == 0, out
    found = json.loads(out.strip().splitlines()[-1])
    installed = {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in found["dists"].items()}
    wrong = {
        name: (want, installed.get(name))
        for name, want in lock_pins().items()
        # the CPU wheel carries a local label (2.13.0+cpu); the lock names the public version
        if installed.get(name, "").split("+")[0] != want
    }
    assert not wrong, f"installed versions that differ from requirements.lock (want, got): {wrong}"
    header = re.search(r"^# python (\d+\.\d+)", (ROOT / "requirements.lock").read_text(), re.M)
    assert header, "requirements.lock names no python version in its header"
    assert found["python"].rsplit(".", 1)[0] == header.group(1)


@pytest.mark.docker
def test_pipeline_version(image):
    code, out = run_in_image(image, VERSION)
    assert code == 0, out
    version = re.search(r'^__version__ = "([^"]+)"', (ROOT / "pipeline" / "__init__.py").read_text(), re.M)
    assert version and version.group(1) in out


@pytest.mark.docker
def test_check_passes_on_the_shipped_configs_mounted_read_only(image):
    volumes = {ROOT / host: inside for host, inside in CHECK_VOLUMES.items()}
    code, out = run_in_image(image, CHECK, volumes=volumes)
    assert code == 0, out


@pytest.mark.docker
def test_any_uid_can_write_the_runs_folder_and_the_model_cache(image, tmp_path):
    # A workstation user whose uid is not the image's (docker/compose.yaml runs as `user: UID:GID`).
    runs = tmp_path / "runs"
    runs.mkdir()
    os.chown(runs, 4242, 4242)
    probe = (
        "import os, pathlib; cache = pathlib.Path(os.environ['PIPELINE_CACHE']); "
        "cache.mkdir(parents=True, exist_ok=True); (cache / 'probe').write_text('x'); "
        "pathlib.Path('/work/runs/probe').write_text('x')"
    )
    code, out = run_in_image(image, ["-c", probe], volumes={runs: "/work/runs"}, entrypoint=["python"],
                             user="4242:4242")
    assert code == 0, out
    assert (runs / "probe").stat().st_uid == 4242


@pytest.mark.docker
def test_nox_in_the_image_uses_the_images_locked_venv(image):
    # What .github/workflows/gpu.yml does: the checkout mounted (read-only here), nox pointed at /opt/venv,
    # whose stamp the Dockerfile wrote. A stale stamp would make nox pip-install into /opt/venv and fail.
    code, out = run_in_image(image, ["-s", "check", "--", "configs/tiny_cpu.yaml"], volumes={ROOT: "/src:ro"},
                             entrypoint=["nox"], env={"PIPELINE_NOX_ENV": "/opt/venv"}, workdir="/src")
    assert code == 0, out
    assert "building the locked environment" not in out
    assert "/opt/venv/bin/pipeline check configs/tiny_cpu.yaml" in out


@pytest.mark.docker
def test_the_image_builds_the_real_model_from_its_own_wheel_with_no_network(image):
    # the wheel rides in the image (models.lock); with no network at all the model still builds
    code, out = run_in_image(image, ["build-model", "pipeline://smollm2-135m-instruct"], network="none", timeout=900)
    assert code == 0, out
    # the path is build-model's stdout; stderr (a progress bar) follows it in the combined output
    assert "/cache/pipeline/models/smollm2-135m-instruct-r1" in out.splitlines(), out[-2000:]


def host_user() -> tuple[int, int]:
    """The host user who owns ./runs: this process's user, or uid 1000 (the image's) when that is root."""
    return (os.getuid(), os.getgid()) if os.getuid() != 0 else (1000, 1000)


def read_as(path: Path, uid: int, gid: int) -> None:
    if os.getuid() == uid:
        path.read_bytes()
        return
    proc = subprocess.run(["cat", str(path)], user=uid, group=gid, capture_output=True)
    assert proc.returncode == 0, f"uid {uid} cannot read {path}: {proc.stderr.decode().strip()}"


@pytest.fixture
def host_runs():
    """A ./runs owned by the host user, in a folder that user can reach (pytest's tmp_path is root's 0700)."""
    uid, gid = host_user()
    base = Path(tempfile.mkdtemp(prefix="pipeline-container-test-"))
    runs = base / "runs"
    runs.mkdir()
    for path in (base, runs):
        os.chown(path, uid, gid)
    yield runs
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.docker
def test_smoke_writes_a_run_folder_the_host_user_can_read(image, host_runs):
    uid, gid = host_user()
    runs = host_runs
    code, out = run_in_image(image, SMOKE, volumes={runs: SMOKE_VOLUMES["runs"]}, user=f"{uid}:{gid}",
                             timeout=SMOKE_TIMEOUT_S)
    assert code == 0, out

    reports = sorted(runs.glob("*/smoke.json"))
    assert len(reports) == 1, f"expected one run with smoke.json under {runs}: {list(runs.rglob('*'))}\n{out}"
    report = json.loads(reports[0].read_text())
    assert (report["config"], report["exit_code"], report["ok"], report["device"], report["steps"]) == \
        ("configs/tiny_cpu.yaml", 0, True, "cpu", 3), report
    assert len(list(runs.glob("smoke-*.json"))) == 1, "no combined smoke JSON beside the run folder"
    for path in runs.rglob("*"):
        assert path.stat().st_uid == uid, f"{path} is owned by uid {path.stat().st_uid}, not the host user's {uid}"
        if path.is_file():
            read_as(path, uid, gid)


def test_docs_show_the_commands_these_tests_run():
    text = DOCS.read_text()
    lines = [
        docker_build_line(),
        docker_run_line(VERSION, {}, {}),
        docker_run_line(CHECK, CHECK_VOLUMES, OFFLINE_ENV),
        docker_run_line(SMOKE, SMOKE_VOLUMES, OFFLINE_ENV, SMOKE_USER),
        "pip download -r requirements.lock -d wheelhouse",
        ".ci/docker-setup.sh",
    ]
    missing = [line for line in lines if line not in text]
    assert not missing, f"{DOCS.relative_to(ROOT)} does not show: {missing}"
