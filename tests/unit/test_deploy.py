"""The deployment recipes (Dockerfile, deploy/compose.yaml, deploy/kubernetes/) checked without Docker.

No container engine runs here, so each recipe is checked by what can run: the Dockerfile by
hadolint and by running the substance of every RUN outside Docker (the same `go install` as
scripts/install-opa.sh, the same `pip wheel`, the install into a fresh directory, the
HEALTHCHECK command against a real broker); every broker config a recipe mounts by the real
`mcp-broker check-config` in the file layout the container or pod sees; the Kubernetes
manifests by the Kubernetes JSON schemas (kubernetes-validate, offline, strict: an unknown
field is an error) and by the real OPA loading the policies ConfigMap as the kubelet mounts it.

`python -m tests.unit.test_deploy` rewrites deploy/kubernetes/policies.yaml from policies/rego
(a test fails while the two differ).
"""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from mcp import Client

from broker.app import make_engine
from broker.config import load_config
from tests.support.broker import alive, descendants, stop_gracefully
from tests.support.opa import opa_binary
from tests.support.postgres import running_postgres
from tests.support.redis import running_redis

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "deploy" / "compose.yaml"
KUBERNETES = REPO / "deploy" / "kubernetes"
POLICIES_CONFIGMAP = KUBERNETES / "policies.yaml"
VENV_BIN = Path(sys.executable).parent
# The oldest Kubernetes the manifests promise to work on, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())


# ---------------------------------------------------------------------------------------------
# The Dockerfile as data
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    stage: str
    keyword: str
    arguments: str

    def json_form(self) -> list[str]:
        """The exec form (`["a", "b"]`) of CMD/ENTRYPOINT/HEALTHCHECK CMD as a list."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            text = text.split(" CMD ", 1)[1]
        value = json.loads(text)
        assert isinstance(value, list), f"{self.keyword} is not in exec form: {self.arguments}"
        return [str(v) for v in value]


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions in order, continuation lines joined, comments dropped, each with its stage."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stage = ""
    found: list[Instruction] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = arguments.split()
            stage = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else f"stage{len(found)}"
        found.append(Instruction(stage, keyword, arguments.strip()))
    return found


def stages(instructions: list[Instruction]) -> dict[str, str]:
    """Stage name -> base image."""
    return {i.stage: i.arguments.split()[0] for i in instructions if i.keyword == "FROM"}


def in_stage(instructions: list[Instruction], stage: str, keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.stage == stage and i.keyword == keyword]


def copy_sources(instruction: Instruction) -> tuple[list[str], str]:
    """`COPY a b dest/` -> (["a", "b"], "dest/"); flags such as --from are not sources."""
    words = [w for w in shlex.split(instruction.arguments) if not w.startswith("--")]
    return words[:-1], words[-1]


def env_defaults(instructions: list[Instruction], stage: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in in_stage(instructions, stage, "ENV"):
        for word in shlex.split(instruction.arguments):
            name, _, value = word.partition("=")
            values[name] = value
    return values


def install_opa_version() -> str:
    match = re.search(r'^OPA_VERSION="([^"]+)"', (REPO / "scripts" / "install-opa.sh").read_text(), re.M)
    assert match, "scripts/install-opa.sh no longer pins OPA_VERSION"
    return match.group(1)


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


# ---------------------------------------------------------------------------------------------
# The file layout a container or pod sees, built in a temporary directory
# ---------------------------------------------------------------------------------------------


def image_layout(root: Path) -> Path:
    """Copy what the runtime stage COPYs from the build context to `root`/<destination>."""
    for instruction in in_stage(dockerfile_instructions(), "runtime", "COPY"):
        if "--from=" in instruction.arguments:
            continue
        sources, destination = copy_sources(instruction)
        target = root / destination.lstrip("/")
        for source in sources:
            origin = REPO / source
            if origin.is_dir():
                shutil.copytree(
                    origin, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
                )
            elif destination.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
    return root


def mount_configmap(data: Mapping[str, str], directory: Path, version: int = 0) -> None:
    """What the kubelet writes for a ConfigMap volume: a timestamped directory, `..data`, key symlinks.

    With `version` > 0 it updates a mounted one the way the kubelet does: a new timestamped
    directory, `..data` swapped to it atomically (rename), the old directory removed.
    """
    if version == 0 and directory.exists():
        shutil.rmtree(directory)  # a volume hides what the image has at its mount path
    directory.mkdir(parents=True, exist_ok=True)
    old = os.readlink(directory / "..data") if version else None
    payload = directory / f"..2026_01_01_00_00_{version:02d}.000000000"
    payload.mkdir()
    for key, text in data.items():
        (payload / key).write_text(text)
    (directory / "..data_tmp").symlink_to(payload.name)
    (directory / "..data_tmp").rename(directory / "..data")
    if old is not None:
        shutil.rmtree(directory / old)
    for key in data:
        if not (directory / key).is_symlink():
            (directory / key).symlink_to(f"..data/{key}")


def env_references(config_text: str) -> set[str]:
    """The environment variables named by `{env: NAME}` secret references anywhere in a config."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("env"), str) and set(node) <= {"env", "prefix"}:
                found.add(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(config_text))
    return found


def check_config(path: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "mcp-broker"), "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


# ---------------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile(tmp_path: Path) -> None:
    hadolint = VENV_BIN / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr
    # The linter really lints: an unpinned base image and an unpinned pip install are reported.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    done = subprocess.run(
        [str(hadolint), "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0 and "DL3007" in done.stdout and "DL3013" in done.stdout, done.stdout


def test_dockerfile_has_the_three_stages_on_pinned_images() -> None:
    instructions = dockerfile_instructions()
    bases = stages(instructions)
    assert list(bases) == ["opa", "build", "runtime"]
    for stage, image in bases.items():
        _, _, tag = image.partition(":")
        assert tag and tag != "latest" and "latest" not in tag, f"{stage}: base image {image} is not pinned"
    # The runtime is the build stage's Python (the venv is copied across), the project's minor.
    assert bases["build"] == bases["runtime"]
    assert bases["runtime"].startswith(f"python:{load_pyproject_python()}-slim"), bases["runtime"]


def load_pyproject_python() -> str:
    match = re.search(r'^python_version = "(\d+\.\d+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert match, "pyproject.toml [tool.mypy] python_version is gone"
    return match.group(1)


def test_runtime_stage_runs_the_broker_as_a_non_root_user_with_a_healthcheck() -> None:
    instructions = dockerfile_instructions()
    users = in_stage(instructions, "runtime", "USER")
    assert users, "the runtime stage sets no USER"
    user = users[-1].arguments.split(":")[0]
    assert user not in ("0", "root"), users[-1]
    (entrypoint,) = in_stage(instructions, "runtime", "ENTRYPOINT")
    (cmd,) = in_stage(instructions, "runtime", "CMD")
    assert entrypoint.json_form() == ["mcp-broker"]
    assert cmd.json_form() == ["serve", "-c", "/etc/mcp-broker/broker.yaml"]
    (expose,) = in_stage(instructions, "runtime", "EXPOSE")
    assert expose.arguments == "8787"
    (healthcheck,) = in_stage(instructions, "runtime", "HEALTHCHECK")
    assert "MCP_BROKER_HEALTHCHECK_URL" in " ".join(healthcheck.json_form())
    url = env_defaults(instructions, "runtime")["MCP_BROKER_HEALTHCHECK_URL"]
    assert url == "http://127.0.0.1:8787/healthz"
    # The config the image starts with is baked in, and listens where EXPOSE and the healthcheck say.
    baked = [
        copy_sources(i)
        for i in in_stage(instructions, "runtime", "COPY")
        if copy_sources(i)[1] == "/etc/mcp-broker/broker.yaml"
    ]
    assert baked == [(["deploy/compose/standalone.yaml"], "/etc/mcp-broker/broker.yaml")]
    http = yaml.safe_load((REPO / "deploy/compose/standalone.yaml").read_text())["http"]
    assert (http["host"], http["port"]) == ("0.0.0.0", 8787)


def test_build_stage_copies_the_pins_before_it_installs() -> None:
    instructions = [i for i in dockerfile_instructions() if i.stage == "build"]
    copies = [n for n, i in enumerate(instructions) if i.keyword == "COPY"]
    constraints = next(n for n in copies if copy_sources(instructions[n])[0] == ["constraints.txt"])
    installs = [n for n, i in enumerate(instructions) if i.keyword == "RUN" and "pip install" in i.arguments]
    assert installs, "the build stage installs nothing"
    for n in installs:
        assert constraints < n, "constraints.txt must be copied before pip install runs"
        assert "-c constraints.txt" in instructions[n].arguments
        assert "--no-cache-dir" in instructions[n].arguments


def test_every_copied_path_passes_dockerignore() -> None:
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        # Docker's rule: the last matching pattern wins; a pattern matching a parent counts.
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            pattern = pattern.replace("**/", "*")
            if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
                verdict = not negate
        return verdict

    sources = [
        source
        for i in dockerfile_instructions()
        if i.keyword == "COPY" and "--from=" not in i.arguments
        for source in copy_sources(i)[0]
    ]
    assert sources
    for source in sources:
        path = (REPO / source).relative_to(REPO)
        assert (REPO / path).exists(), f"COPY {source}: no such file in the repository"
        files = [path] if (REPO / path).is_file() else [p.relative_to(REPO) for p in (REPO / path).rglob("*")]
        kept = [f for f in files if (REPO / f).is_file() and "__pycache__" not in f.parts]
        assert kept and not [f for f in kept if ignored(str(f))], f"COPY {source}: excluded by .dockerignore"
    # … and what must never reach a build context does not.
    for secret_or_cache in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "tools/node"):
        assert ignored(secret_or_cache), secret_or_cache


def test_opa_stage_builds_the_version_install_opa_sh_pins() -> None:
    instructions = dockerfile_instructions()
    (arg,) = in_stage(instructions, "opa", "ARG")
    assert arg.arguments == f"OPA_VERSION={install_opa_version()}"
    (build,) = in_stage(instructions, "opa", "RUN")
    # The same build as scripts/install-opa.sh (static, trimmed, stripped), checked by version.
    for piece in (
        "CGO_ENABLED=0",
        "-trimpath",
        "-ldflags='-s -w'",
        "github.com/open-policy-agent/opa@v${OPA_VERSION}",
    ):
        assert piece in build.arguments, piece
    script = (REPO / "scripts" / "install-opa.sh").read_text()
    for piece in ("CGO_ENABLED=0", "-trimpath", "-ldflags='-s -w'", '"$MODULE@v$OPA_VERSION"'):
        assert piece in script, piece
    # The go install itself, as the script runs it (cached after the first build).
    opa = opa_binary()
    version = subprocess.run([str(opa), "version"], capture_output=True, text=True, timeout=30, check=True)
    assert f"Version: {install_opa_version()}" in version.stdout.splitlines()
    (runtime_copy,) = [i for i in in_stage(instructions, "runtime", "COPY") if "--from=opa" in i.arguments]
    assert copy_sources(runtime_copy) == (["/out/opa"], "/usr/local/bin/opa")


def test_go_image_is_new_enough_for_the_pinned_opa() -> None:
    image = stages(dockerfile_instructions())["opa"]
    assert image.startswith("golang:")
    go_in_image = version_tuple(image.split(":")[1].split("-")[0])
    done = subprocess.run(
        ["go", "mod", "download", "-json", f"github.com/open-policy-agent/opa@v{install_opa_version()}"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    go_mod = Path(json.loads(done.stdout)["GoMod"]).read_text()
    match = re.search(r"^go (\S+)", go_mod, re.M)
    assert match
    required = version_tuple(match.group(1))
    assert go_in_image >= required[: len(go_in_image)], f"{image} is older than OPA's go {match.group(1)}"


# ---------------------------------------------------------------------------------------------
# The package as the build stage makes it
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps` over a build context holding exactly what the build stage COPYs."""
    context = tmp_path_factory.mktemp("build-context")
    for instruction in in_stage(dockerfile_instructions(), "build", "COPY"):
        sources, destination = copy_sources(instruction)
        for source in sources:
            # `COPY a b ./` or `COPY dir/ dir/`: the context's layout under WORKDIR /src.
            assert destination in ("./", source), instruction
            origin = REPO / source
            if origin.is_dir():
                shutil.copytree(origin, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, context / source)
    (build,) = [i for i in in_stage(dockerfile_instructions(), "build", "RUN") if "pip wheel" in i.arguments]
    assert "pip wheel --no-cache-dir --no-deps --wheel-dir /wheels ." in build.arguments
    out = tmp_path_factory.mktemp("wheels")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--wheel-dir",
            str(out),
            ".",
        ],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("mcp_authz_broker-*.whl")
    return built


def test_wheel_holds_the_whole_package_and_the_entry_point(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        str(p.relative_to(REPO))
        for p in (REPO / "broker").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert expected <= names, sorted(expected - names)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "mcp-broker = broker.cli:main" in text


def test_wheel_holds_the_schemas_the_broker_reads_at_runtime(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    needed = {p.name for p in (REPO / "schemas").iterdir()}
    shipped = {Path(n).name for n in names if "schemas/" in n}
    assert needed <= shipped, sorted(needed - shipped)


def test_the_build_stage_install_resolves_within_the_pins(wheel: Path) -> None:
    """The build stage's `pip install -c constraints.txt '…[postgres,redis] @ file://…'`, as a dry run."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-cache-dir",
            "-c",
            str(REPO / "constraints.txt"),
            f"mcp-authz-broker[postgres,redis] @ {wheel.as_uri()}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Would install mcp-authz-broker-0.1.0" in done.stdout, done.stdout


def installed_from_wheel(wheel: Path, target: Path) -> Path:
    """The wheel installed into a plain directory (the venv's site-packages in the image)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-cache-dir",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return target


def check_config_with(site: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """`mcp-broker check-config` importing the broker from `site` only (not from the checkout)."""
    code = (
        "import sys, broker.cli; "
        f"assert broker.cli.__file__.startswith({str(site)!r}), broker.cli.__file__; "
        "sys.exit(broker.cli.main())"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=site.parent,
        env={**os.environ, "PYTHONPATH": str(site), "BROKER_PG_DSN": "postgresql://x@db/x"},
        check=False,
    )


def test_a_plain_wheel_install_checks_a_config(wheel: Path, tmp_path: Path) -> None:
    site = installed_from_wheel(wheel, tmp_path / "site-packages")
    root = image_layout(tmp_path / "image")
    done = check_config_with(site, root / "etc/mcp-broker/broker.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------
# The image's own config, served for real in the image's layout; its HEALTHCHECK run against it
# ---------------------------------------------------------------------------------------------


def image_config(root: Path, name: str) -> Path:
    """A config of deploy/compose in the image layout under `root`, with the image's absolute
    paths (/opt/mcp-broker, /var/lib/mcp-broker) moved under `root` too."""
    text = (REPO / "deploy" / "compose" / name).read_text()
    for prefix in ("/opt/mcp-broker/", "/var/lib/mcp-broker"):
        text = text.replace(prefix, str(root) + prefix)
    path = root / "etc" / "mcp-broker" / "broker.yaml"
    path.write_text(text)
    return path


@dataclass
class Served:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(config: Path, env: Mapping[str, str]) -> Served:
        ready = config.parent / f"ready-{len(started)}"
        log = config.parent / f"broker-{len(started)}.log"
        path = os.pathsep.join([str(VENV_BIN), str(opa_binary().parent), os.environ.get("PATH", "")])
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    str(VENV_BIN / "mcp-broker"),
                    "serve",
                    "-c",
                    str(config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--ready-file",
                    str(ready),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                env={
                    **os.environ,
                    "PATH": path,
                    "HOME": str(tmp_path),
                    "XDG_STATE_HOME": str(tmp_path / "state"),
                    **env,
                },
            )
        served = Served("", process, log)
        started.append(served)
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the broker did not serve within 60 s:\n" + log.read_text()
            time.sleep(0.05)
        served.base_url = ready.read_text().strip().rsplit("/", 1)[0]
        return served

    yield start
    for served in started:
        children = descendants(served.process.pid)
        stop_gracefully(served.process)
        for pid in children:
            assert not alive(pid), f"the broker left {pid} behind:\n{served.log.read_text()[-2000:]}"


def run_healthcheck(url: str) -> int:
    (healthcheck,) = in_stage(dockerfile_instructions(), "runtime", "HEALTHCHECK")
    argv = healthcheck.json_form()
    assert argv[0] == "python"
    done = subprocess.run(
        [sys.executable, *argv[1:]],
        capture_output=True,
        timeout=30,
        env={**os.environ, "MCP_BROKER_HEALTHCHECK_URL": url},
        check=False,
    )
    return done.returncode


@pytest.mark.anyio
async def test_the_image_config_serves_with_opa_and_its_healthcheck_passes(
    tmp_path: Path, serve: Any
) -> None:
    root = image_layout(tmp_path / "image")
    served = serve(image_config(root, "standalone.yaml"), {})
    assert run_healthcheck(served.base_url + "/healthz") == 0
    assert run_healthcheck(served.base_url + "/readyz") == 0
    async with httpx.AsyncClient() as http:
        ready = (await http.get(served.base_url + "/readyz")).json()
    assert ready["ready"] is True and ready["policy"]["engine"] == "opa", ready
    async with Client(served.base_url + "/mcp") as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert "notes__read_note" in tools
        result = await client.call_tool("notes__read_note", {"note_id": "welcome"})
        assert not result.is_error, result
    # The HEALTHCHECK fails when nothing answers (a stopped broker is unhealthy).
    stop_gracefully(served.process)
    assert run_healthcheck(served.base_url + "/healthz") != 0


# ---------------------------------------------------------------------------------------------
# deploy/compose.yaml
# ---------------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


BROKERS = ("broker-1", "broker-2")


def test_compose_has_two_replicas_a_balancer_redis_and_postgres() -> None:
    services = compose()["services"]
    assert set(services) == {"lb", *BROKERS, "postgres", "redis"}
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: image {image} is not pinned"
        if name != "lb":
            assert "ports" not in service, f"{name} publishes a port: only the balancer may"
    assert services["lb"]["ports"] == ["127.0.0.1:8080:8080"]
    for name in BROKERS:
        broker = services[name]
        assert broker["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert (
            COMPOSE.parent / broker["build"]["context"] / broker["build"]["dockerfile"]
        ).resolve() == DOCKERFILE
        assert broker["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }
        assert broker["read_only"] is True and "/tmp" in broker["tmpfs"]
    assert services["lb"]["depends_on"] == {b: {"condition": "service_healthy"} for b in BROKERS}
    # The database and Redis are on an internal network that only the replicas join.
    networks = compose()["networks"]
    assert networks["data"]["internal"] is True
    for name in ("postgres", "redis"):
        assert services[name]["networks"] == ["data"]
    assert "data" not in services["lb"]["networks"]


def mounted_broker_configs(service: Mapping[str, Any]) -> list[tuple[Path, str]]:
    mounts = [m.split(":") for m in service.get("volumes", []) if m.startswith("./")]
    return [
        ((COMPOSE.parent / host).resolve(), inside)
        for host, inside, *_ in mounts
        if inside.endswith("broker.yaml")
    ]


def compose_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """The service's environment with `${VAR:?…}` interpolated as compose would (a dummy value)."""
    return {
        name: re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "dummy-password", str(value))
        for name, value in service["environment"].items()
    }


def test_every_broker_config_compose_mounts_passes_check_config(tmp_path: Path) -> None:
    services = compose()["services"]
    checked = 0
    for name in BROKERS:
        for host_path, inside in mounted_broker_configs(services[name]):
            assert inside == "/etc/mcp-broker/broker.yaml"
            text = host_path.read_text()
            env = compose_environment(services[name])
            missing = env_references(text) - set(env)
            assert not missing, f"{name}: the config names {missing} but compose does not set them"
            root = image_layout(tmp_path / name)
            path = image_config(root, host_path.name)
            done = check_config(path, env)
            assert done.returncode == 0, done.stdout + done.stderr
            checked += 1
    assert checked == len(BROKERS)
    # The secret is not in the config, only its name; compose builds it from POSTGRES_PASSWORD.
    dsn = services["broker-1"]["environment"]["BROKER_PG_DSN"]
    assert "${POSTGRES_PASSWORD:?" in dsn and "@postgres:5432/" in dsn


@pytest.mark.anyio
async def test_the_replica_config_serves_on_postgresql_and_redis(tmp_path: Path, serve: Any) -> None:
    """deploy/compose/broker.yaml for real: its OPA, approvals and audit in PostgreSQL, counters in
    Redis (the compose service names replaced by the test servers' addresses)."""
    service = compose()["services"]["broker-1"]
    ((host_path, _),) = mounted_broker_configs(service)
    with running_postgres() as postgres, running_redis() as redis:
        root = image_layout(tmp_path / "image")
        config = image_config(root, host_path.name)
        text = config.read_text()
        assert "storage: redis://redis:6379/0" in text
        config.write_text(text.replace("redis://redis:6379/0", redis.url))
        served = serve(config, {"BROKER_PG_DSN": postgres.create_database("compose")})
        async with httpx.AsyncClient() as http:
            ready = (await http.get(served.base_url + "/readyz")).json()
        assert ready["ready"] is True and ready["policy"]["engine"] == "opa", ready
        assert "postgresql" in json.dumps(ready["audit"]), ready["audit"]
        async with Client(served.base_url + "/mcp") as client:
            result = await client.call_tool("notes__read_note", {"note_id": "welcome"})
            assert not result.is_error, result
        stop_gracefully(served.process)


def test_the_balancer_sticks_sessions_and_checks_readiness() -> None:
    cfg = (COMPOSE.parent / "compose" / "haproxy.cfg").read_text()
    lines = [line.split("#", 1)[0].strip() for line in cfg.splitlines()]
    assert "stick store-response res.hdr(mcp-session-id)" in lines
    assert "stick match req.hdr(mcp-session-id)" in lines
    assert "http-check send meth GET uri /readyz ver HTTP/1.1 hdr host localhost" in lines
    config = yaml.safe_load((COMPOSE.parent / "compose" / "broker.yaml").read_text())
    servers = [line.split()[1:3] for line in lines if line.startswith("server ")]
    assert servers == [[b, f"{b}:{config['http']['port']}"] for b in BROKERS]
    # Clients reach the replicas through the balancer's published port: the Host they send is allowed.
    published = compose()["services"]["lb"]["ports"][0].rsplit(":", 1)[0]
    assert published in config["http"]["allowed_hosts"]
    lb_mounts = compose()["services"]["lb"]["volumes"]
    assert lb_mounts == ["./compose/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]


# ---------------------------------------------------------------------------------------------
# deploy/kubernetes
# ---------------------------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((KUBERNETES / resource).read_text()) if d)
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, f"kustomization.yaml lists {sorted(listed)}, the folder has {sorted(on_disk)}"
    return docs


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [
        d for d in manifests() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    return found


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    docs = manifests()
    assert {d["kind"] for d in docs} >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceAccount",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_a_typo_in_a_manifest_fails_validation() -> None:
    """The schema check is strict: a misspelt field is an error, not ignored."""
    deployment = copy.deepcopy(one("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    service = copy.deepcopy(one("Service"))
    service["spec"]["ports"][0]["port"] = "8787"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSIONS[0], strict=True)


def test_the_deployment_is_probed_hardened_and_wired_to_its_configmaps_and_secret() -> None:
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8787}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) | set(
        container["resources"]["limits"]
    )
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The uid is the one the image creates and runs as.
    image_user = in_stage(dockerfile_instructions(), "runtime", "USER")[-1].arguments.split(":")[0]
    assert str(pod["securityContext"]["runAsUser"]) == image_user
    # A read-only root: everything the broker and its OPA write is an emptyDir.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for writable in ("/tmp", "/var/lib/mcp-broker"):
        assert "emptyDir" in volumes[mounts[writable]], writable
    # Secrets only by reference.
    for variable in container["env"]:
        assert "value" not in variable and "secretKeyRef" in variable["valueFrom"], variable
    # ConfigMaps referenced exist; the Service, PDB and HPA point at these pods.
    configmaps = {d["metadata"]["name"] for d in manifests() if d["kind"] == "ConfigMap"}
    assert {v["configMap"]["name"] for v in volumes.values() if "configMap" in v} <= configmaps
    assert one("Service")["spec"]["selector"] == labels
    assert one("Service")["spec"]["ports"][0]["targetPort"] == "http"
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == labels
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "mcp-broker",
    }
    assert (
        hpa["spec"]["minReplicas"] >= 2
        and one("PodDisruptionBudget")["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    )
    assert pod["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]


def pod_filesystem(root: Path) -> tuple[Path, dict[str, str]]:
    """The broker container's files as the pod sees them: the image, then every ConfigMap volume
    mounted over it as the kubelet does. Returns the config path and the environment (the
    Secret's keys as dummy values)."""
    image_layout(root)
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        target = root / mount["mountPath"].lstrip("/")
        if "configMap" in volume:
            mount_configmap(one("ConfigMap", volume["configMap"]["name"])["data"], target)
        else:
            target.mkdir(parents=True, exist_ok=True)
    args = container["args"]
    assert args[:2] == ["serve", "-c"]
    env = {v["name"]: f"dummy-{v['valueFrom']['secretKeyRef']['key']}" for v in container["env"]}
    return root / args[2].lstrip("/"), env


def test_the_configmap_config_passes_check_config_in_the_pod_layout(tmp_path: Path) -> None:
    config, env = pod_filesystem(tmp_path / "pod")
    missing = env_references(config.read_text()) - set(env)
    assert not missing, f"the config names {missing} but the Deployment does not set them"
    done = check_config(config, env)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.anyio
async def test_the_managed_opa_loads_the_policies_configmap_as_mounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path, env = pod_filesystem(tmp_path / "pod")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", f"{opa_binary().parent}{os.pathsep}{os.environ['PATH']}")
    config = load_config(config_path)
    assert config.policy.engine == "opa" and config.policy.opa.binary == "opa"
    rego = config.policy.path / "rego"
    assert (rego / "..data").is_symlink() and (rego / "mcp.authz.authz.rego").is_symlink()
    engine, watched = make_engine(config.policy)
    await engine.start()  # `opa check --strict` on a snapshot of the mount, then OPA serves it
    try:
        first = engine.policy_version
        assert first.startswith("sha256:"), first
        # `kubectl apply` of a changed ConfigMap: the kubelet swaps the files; the watcher sees
        # other files, and the reload snapshots the new content through the key symlinks.
        def fingerprint() -> set[tuple[str, int]]:  # what the policy watcher compares (stat follows links)
            return {(str(p), p.stat().st_size) for p in watched()}

        assert not any(".." in p.relative_to(rego).parts[0] for p in watched()), "files counted twice"
        before = fingerprint()
        data = dict(one("ConfigMap", "mcp-broker-policies")["data"])
        data["mcp.authz.authz.rego"] += "\n# changed through the ConfigMap\n"
        mount_configmap(data, rego, version=1)
        assert fingerprint() != before
        result = await engine.reload()
        assert result.ok, result.message
        assert engine.policy_version not in (first, "unknown"), engine.policy_version
        # A broken edit is refused and the running set stays.
        data["mcp.authz.authz.rego"] += "this is not rego\n"
        mount_configmap(data, rego, version=2)
        refused = await engine.reload()
        assert not refused.ok and "rego_parse_error" in refused.message, refused.message
    finally:
        await asyncio.wait_for(engine.stop(), 30)


@pytest.mark.anyio
async def test_cedar_policies_load_from_a_configmap_mount(tmp_path: Path) -> None:
    from broker.config import DEFAULT_CEDAR_SCHEMA
    from broker.policy.cedar import CedarEngine

    policies = tmp_path / "policies"
    mount_configmap(
        {p.name: p.read_text() for p in (REPO / "policies/cedar").glob("*.cedar")}, policies / "cedar"
    )
    engine = CedarEngine(policies, DEFAULT_CEDAR_SCHEMA)
    await engine.start()
    try:
        assert engine.policy_version.startswith("sha256:")
    finally:
        await engine.stop()


def render_policies_configmap() -> str:
    """deploy/kubernetes/policies.yaml: policies/rego (without tests) as one flat ConfigMap.

    OPA loads every .rego file under policy.path/rego whatever the folders, so the keys are the
    relative paths with `/` -> `.` (ConfigMap keys cannot hold `/`).
    """
    rego = REPO / "policies" / "rego"
    lines = [
        "# GENERATED from policies/rego by `python -m tests.unit.test_deploy`: do not edit by hand.",
        "# The Rego policies the broker's OPA loads (mounted at /etc/mcp-broker/policies/rego).",
        "# Edited here instead, the file watcher picks a change up, OPA checks it, and only a set",
        "# that passes goes live; tests/unit/test_deploy.py fails while this differs from policies/rego.",
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata:",
        "  name: mcp-broker-policies",
        "  labels:",
        "    app.kubernetes.io/name: mcp-broker",
        "    app.kubernetes.io/component: policies",
        "data:",
    ]
    for path in sorted(rego.rglob("*.rego")):
        if path.name.endswith("_test.rego"):
            continue
        key = ".".join(path.relative_to(rego).parts)
        text = path.read_text()
        assert text.endswith("\n") and not text.endswith("\n\n"), f"{path}: not one final newline"
        lines.append(f"  {key}: |")
        lines.extend(f"    {line}" if line else "" for line in text.splitlines())
    return "\n".join(lines) + "\n"


def test_the_policies_configmap_is_policies_rego() -> None:
    expected = render_policies_configmap()
    assert POLICIES_CONFIGMAP.read_text() == expected, (
        "deploy/kubernetes/policies.yaml is stale: run `.venv/bin/python -m tests.unit.test_deploy`"
    )
    data = one("ConfigMap", "mcp-broker-policies")["data"]
    assert data["mcp.authz.authz.rego"] == (REPO / "policies/rego/mcp/authz/authz.rego").read_text()


if __name__ == "__main__":
    POLICIES_CONFIGMAP.write_text(render_policies_configmap())
    print(f"wrote {POLICIES_CONFIGMAP.relative_to(REPO)}")
