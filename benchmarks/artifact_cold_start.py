"""Cold start in the built artifact's layout: the x86_64 twin of the arm64 artifact, run by python3.13.

The deployed artifact is for arm64, which this machine cannot run; local/check_artifact.py builds an x86_64 twin
with the same recipe (src/Makefile) into .aws-sam/x86-twin, and installs boto3 into .aws-sam/runtime-sim, which
plays the Lambda runtime's own boto3. Every child is a fresh `python3.13 -I -B` (isolated: no PYTHONPATH, no user
site; -B: Lambda's code directory is read-only, so nothing is cached between cold starts) whose sys.path is, as on
Lambda, the layout first (/var/task), then the runtime's packages, then the standard library (the interpreter's own
site-packages is taken out); the probe files (benchmarks/coldprobe.py, local/context.py, compiled for 3.13 in a
scratch directory) come last. Each child checks, after answering, that openai came from the layout and nothing
from outside it (benchmarks.coldprobe.layout_report), and reports how the layout's modules were loaded.

    1. floor     the floor script (as variant c of the dev cold start) in the twin
    2. handler   lambda_chat.handler and a first API Gateway request, in the twin as built (sourceless .pyc for
                 the cold modules, src/cold_modules.txt)
    3. sources   the same handler in what `sam build` alone would ship: the same pip install, the same removals,
                 src/lambda_chat copied, no .pyc at all (so every cold start compiles what it imports)

The twin is (re)built with local.check_artifact.build_twin when it is missing, older than its inputs, or has
been run by a Python that wrote __pycache__ into it (check_artifact does, without -B). python3.13 is found as
check_artifact finds it (LAMBDA_PYTHON, else python3.13 through pyenv with the top-level Makefile's SAM_PYENV);
the children run the real interpreter, not pyenv's shim (whose start-up would be timed).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.artifact import files_under
from benchmarks.cold_start import CHILD_TIMEOUT_S, Sample, paired_ratio, parse_sample
from benchmarks.common import EVENT_FILE, ROOT, Config, heading, median, percentile, ratio, rotated, table, verdict
from benchmarks.stack import Stack, run_main, standalone
from local import check_artifact

SRC = ROOT / "src"
MAKEFILE = SRC / "Makefile"
TWIN = check_artifact.TWIN
RUNTIME_SIM = check_artifact.RUNTIME_SIM
PY_VERSION = "3.13"
X86_PLATFORM = "manylinux2014_x86_64"
TWIN_INPUTS = (SRC / "Makefile", SRC / "requirements.txt", SRC / "cold_modules.txt")
PROBE_FILES = ("benchmarks/__init__.py", "benchmarks/coldprobe.py", "local/__init__.py", "local/context.py")
BUILD_TIMEOUT_S = 300


@dataclass(frozen=True)
class Variant:
    label: str
    probe: str  # the benchmarks.coldprobe variant the child runs
    layout: str  # "twin" or "sources"


VARIANTS = {
    "floor": Variant("1. floor (openai + boto3 secret), twin", "floor", "twin"),
    "handler": Variant("2. OUR handler, twin as built (.pyc)", "handler", "twin"),
    "sources": Variant("3. OUR handler, sources only (no .pyc)", "handler", "sources"),
}

# compile() of the files given, best of 3, in ns.
COMPILE_CODE = """\
import sys, time
sources = [(name, open(name, "rb").read()) for name in sys.argv[1:]]
best = None
for _ in range(3):
    started = time.perf_counter_ns()
    for name, source in sources:
        compile(source, name, "exec")
    elapsed = time.perf_counter_ns() - started
    best = elapsed if best is None else min(best, elapsed)
print(best)
"""
# The child: the Lambda-like sys.path, the probe, then (not timed) the layout check and report.
CHILD_CODE = """\
import sys
layout, runtime, probe, variant = sys.argv[1:5]
sys.path[:] = [layout, runtime, *(p for p in sys.path if not p.endswith("site-packages")), probe]
import benchmarks.coldprobe as p
p.main(variant)
p.layout_report(layout, runtime)
"""


@dataclass(frozen=True)
class Loaded:
    """How the layout's modules were loaded in one child."""

    sourceless: int
    cached: int
    compiled: int
    native: int
    compiled_files: tuple[str, ...]  # relative to the layout


# ---------------------------------------------------------------- python3.13 and the twin


def makefile_variable(path: Path, name: str) -> str:
    """The value of `NAME := ...` or `NAME ?= ...` in a Makefile (continuation lines joined)."""
    text = path.read_text().replace("\\\n", " ")
    match = re.search(rf"^{name}\s*[:?]?=\s*(.*)$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{name} not found in {path}")
    return match.group(1).strip()


@contextmanager
def lambda_python_env() -> Iterator[None]:
    """PYENV_VERSION as `make check-artifact` sets it (SAM_PYENV), if unset, so that pyenv finds python3.13."""
    if "PYENV_VERSION" in os.environ:
        yield
        return
    os.environ["PYENV_VERSION"] = makefile_variable(ROOT / "Makefile", "SAM_PYENV")
    try:
        yield
    finally:
        os.environ.pop("PYENV_VERSION", None)


def real_interpreter(python: str) -> str:
    """The interpreter's own path (not pyenv's shim), checked to be Python 3.13."""
    code = "import sys; print(sys.executable); print('%d.%d' % sys.version_info[:2])"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    except OSError as error:
        raise RuntimeError(f"{python} cannot be run ({error}); set LAMBDA_PYTHON") from error
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2 or lines[1] != PY_VERSION:
        raise RuntimeError(f"{python} is not a working Python {PY_VERSION}: {(done.stderr or done.stdout)[-500:]}")
    return lines[0]


def written_pycache(twin: Path) -> list[Path]:
    """__pycache__ directories a Python run wrote into the twin.

    The build compiles with --invalidation-mode unchecked-hash (pyc flags 0b01); a Python run caching what it
    compiled writes timestamp-based .pyc (flags 0), which is what gives a run's cache away.
    """
    return [
        path
        for path in twin.rglob("__pycache__")
        if any(int.from_bytes(pyc.read_bytes()[4:8], "little") == 0 for pyc in path.glob("*.pyc"))
    ]


def twin_staleness() -> str | None:
    """Why the twin must be (re)built, or None if it is fresh and as built."""
    package = TWIN / "lambda_chat"
    if not package.is_dir() or not (RUNTIME_SIM / "boto3").is_dir():
        return f"{TWIN} or {RUNTIME_SIM} is missing"
    if (TWIN / ".cold").exists() or not any(path.parent.name != "__pycache__" for path in TWIN.rglob("*.pyc")):
        return "its last build did not finish (no sourceless .pyc, or src/Makefile's .cold list left behind)"
    built = package.stat().st_mtime
    inputs = [*TWIN_INPUTS, *(SRC / "lambda_chat").glob("*.py")]
    newer = sorted(str(path.relative_to(ROOT)) for path in inputs if path.stat().st_mtime > built)
    if newer:
        return f"older than {', '.join(newer)}"
    written = written_pycache(TWIN)
    if written:
        return f"a Python run has written {len(written)} __pycache__ directories into it since its build"
    return None


def ensure_twin() -> None:
    reason = twin_staleness()
    if reason is None:
        print(f"twin: {TWIN.relative_to(ROOT)} as built (fresh)")
        return
    print(f"twin: rebuilding with local.check_artifact.build_twin ({reason})", flush=True)
    started = time.monotonic()
    check_artifact.build_twin()
    print(f"twin: built in {time.monotonic() - started:.0f} s")


# ---------------------------------------------------------------- the sources-only layout and the probe files


def pip_install(python: str, target: Path) -> None:
    """The dependency install of src/Makefile, for x86_64, without compiling."""
    command = [
        python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
        "--only-binary=:all:", "--platform", X86_PLATFORM, "--implementation", "cp", "--python-version", PY_VERSION,
        "--target", str(target), "-r", "requirements.txt",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=SRC, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pip install for the sources-only layout failed:\n{done.stderr[-3000:]}")


def build_sources(python: str, target: Path) -> None:
    """What the twin holds, as sources and without any .pyc: src/Makefile's steps except the compiling ones."""
    pip_install(python, target)
    for package in makefile_variable(MAKEFILE, "PROVIDED_BY_RUNTIME").split():
        shutil.rmtree(target / package, ignore_errors=True)
        for info in target.glob(f"{package}-*.dist-info"):
            shutil.rmtree(info)
    for part in makefile_variable(MAKEFILE, "UNUSED_POWERTOOLS").split():
        shutil.rmtree(target / "aws_lambda_powertools" / part, ignore_errors=True)
    shutil.rmtree(target / "bin", ignore_errors=True)
    shutil.copytree(SRC / "lambda_chat", target / "lambda_chat", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    compiled = pyc_count(target)
    if compiled:
        raise RuntimeError(f"the sources-only layout holds {compiled} .pyc files")


def pyc_count(root: Path) -> int:
    return sum(1 for path in files_under(root) if path.suffix == ".pyc")


def layout_files(root: Path) -> set[str]:
    """What a layout ships, as sources: a sourceless `m.pyc` counts as `m.py`, __pycache__ is left out."""
    names = set()
    for path in files_under(root):
        relative = path.relative_to(root)
        if "__pycache__" not in relative.parts:
            name = relative.as_posix()
            names.add(name.removesuffix("c") if name.endswith(".pyc") else name)
    return names


def parity(twin: Path, sources: Path) -> str:
    twin_files, source_files = layout_files(twin), layout_files(sources)
    if twin_files == source_files:
        return f"the same {len(twin_files)} files as the twin (its sourceless .pyc as .py)"
    only_twin, only_sources = sorted(twin_files - source_files), sorted(source_files - twin_files)
    return (
        f"DIFFERS from the twin: {len(only_twin)} only in the twin ({', '.join(only_twin[:5])}), "
        f"{len(only_sources)} only here ({', '.join(only_sources[:5])})"
    )


def set_writable(root: Path, writable: bool) -> None:
    """chmod -R a-w (or u+w back): Lambda's code directory is read-only."""
    for directory, _, names in os.walk(root):
        for path in [Path(directory), *(Path(directory) / name for name in names)]:
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                continue
            path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def make_probe(python: str, target: Path) -> None:
    """benchmarks.coldprobe, local.context and the event, compiled for 3.13, outside the repository."""
    for name in PROBE_FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)
    (target / "events").mkdir()
    shutil.copy2(EVENT_FILE, target / "events" / EVENT_FILE.name)
    subprocess.run([python, "-m", "compileall", "-q", str(target)], check=True, timeout=BUILD_TIMEOUT_S)


# ---------------------------------------------------------------- children


def command(python: str, layout: Path, probe: Path, variant: Variant) -> list[str]:
    return [python, "-I", "-B", "-c", CHILD_CODE, str(layout), str(RUNTIME_SIM), str(probe), variant.probe]


def parse_loaded(stdout: str) -> Loaded:
    for line in reversed(stdout.splitlines()):
        if line.startswith("LAYOUT "):
            head, _, tail = line.partition("\t")
            sourceless, cached, compiled, native = (int(value) for value in head.split()[1:])
            return Loaded(sourceless, cached, compiled, native, tuple(filter(None, tail.split(","))))
    raise RuntimeError("the child printed no LAYOUT line")


def spawn(python: str, name: str, layouts: dict[str, Path], probe: Path, env: dict[str, str]) -> tuple[Sample, Loaded]:
    """One fresh process. A child that fails, times out (it is killed) or answers wrongly raises, with its stderr."""
    variant = VARIANTS[name]
    layout = layouts[variant.layout]
    started = time.monotonic_ns()
    try:
        done = subprocess.run(
            command(python, layout, probe, variant),
            env={**env, "BENCH_T0_NS": str(started)},
            cwd=layout,  # Lambda's working directory is /var/task
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{variant.label}: no answer within {CHILD_TIMEOUT_S} s (killed)") from error
    wall_ms = (time.monotonic_ns() - started) / 1e6
    if done.returncode != 0:
        raise RuntimeError(f"{variant.label}: exit {done.returncode}:\n{done.stderr[-3000:]}")
    sample = parse_sample(name, done, wall_ms)
    if not sample.ok:
        output = "\n".join(line for line in done.stdout.splitlines() if not line.startswith(("BENCH ", "LAYOUT ")))
        raise RuntimeError(f"{variant.label}: wrong answer (not 200 with success); it wrote:\n{output[-3000:]}")
    return sample, parse_loaded(done.stdout)


def child_env(stack: Stack) -> dict[str, str]:
    env = stack.child_env()
    env.pop("PYTHONPATH", None)  # -I ignores it anyway
    return env


@dataclass
class Measured:
    samples: dict[str, list[Sample]]
    loaded: dict[str, Loaded]  # from the untimed first run of each variant (the same in every run)
    compile_ms: dict[str, float] = field(default_factory=dict)  # compile() cost of what a twin variant compiles


def measure(python: str, layouts: dict[str, Path], probe: Path, env: dict[str, str], rounds: int) -> Measured:
    names = list(VARIANTS)
    loaded = {name: spawn(python, name, layouts, probe, env)[1] for name in names}  # untimed: warms the file cache
    samples: dict[str, list[Sample]] = defaultdict(list)
    for round_index in range(rounds):
        for name in rotated(names, round_index):
            samples[name].append(spawn(python, name, layouts, probe, env)[0])
        print(f"  round {round_index + 1}/{rounds} done", file=sys.stderr, flush=True)
    return Measured(dict(samples), loaded)


# ---------------------------------------------------------------- tables


def medians(samples: dict[str, list[Sample]], attribute: str) -> dict[str, float]:
    return {name: median([getattr(s, attribute) for s in runs]) for name, runs in samples.items()}


def results_table(measured: Measured) -> str:
    rows = []
    for name, variant in VARIANTS.items():
        runs, loaded = measured.samples[name], measured.loaded[name]
        times = [s.to_answer_ms for s in runs]
        rows.append(
            (
                variant.label,
                median(times),
                min(times),
                percentile(times, 0.9),
                median([s.wall_ms for s in runs]),
                median([s.rss_mib for s in runs]),
                f"{loaded.sourceless} / {loaded.cached} / {loaded.compiled}",
                f"{sum(s.ok for s in runs)}/{len(runs)}",
            )
        )
    headers = (
        "variant",
        "median ms",
        "min ms",
        "p90 ms",
        "spawn->exit ms",
        "peak RSS MiB",
        "layout modules: .pyc / __pycache__ / compiled",
        "answers ok",
    )
    return table(
        headers,
        rows,
        "Start to answer (child's clock, exit excluded); spawn->exit seen from the parent; peak RSS = VmHWM;\n"
        "layout modules: how the modules imported from the layout were loaded (sourceless .pyc, the __pycache__\n"
        "beside their source, compiled from source at this start)",
    )


def ratios_table(samples: dict[str, list[Sample]]) -> str:
    med = medians(samples, "to_answer_ms")
    rss = medians(samples, "rss_mib")
    specs = [
        ("2/1  handler as built / floor", "handler", "floor", "at most 1.00"),
        ("3/2  sources only / as built", "sources", "handler", ""),
        ("3/1  sources only / floor", "sources", "floor", ""),
    ]
    rows = [
        (
            label,
            ratio(med[top], med[bottom]),
            paired_ratio(samples, top, bottom),
            med[top] - med[bottom],
            rss[top] - rss[bottom],
            target,
        )
        for label, top, bottom, target in specs
    ]
    headers = ("ratio", "of medians", "median per round", "difference ms", "peak RSS difference MiB", "target")
    return table(headers, rows, "Ratios")


def phases_table(samples: dict[str, list[Sample]]) -> str:
    rows = []
    for name, variant in VARIANTS.items():
        label, previous = variant.label, 0.0
        for phase in [*samples[name][0].phases, "answered"]:
            times = [s.to_answer_ms if phase == "answered" else s.phases[phase] for s in samples[name]]
            at = median(times)
            rows.append((label, phase, at, at - previous))
            label, previous = "", at
    headers = ("variant", "phase ends", "median ms since start", "phase ms")
    return table(headers, rows, "Where the cold start goes (medians of the same rounds)")


def compile_ms(python: str, layout: Path, files: tuple[str, ...]) -> float:
    """What compiling these sources costs (compile() only, best of 3, in one python3.13): an estimate of what a
    start pays for them."""
    done = subprocess.run(
        [python, "-I", "-c", COMPILE_CODE, *(str(layout / name) for name in files)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=True,
    )
    return int(done.stdout.split()[-1]) / 1e6


def compile_costs(python: str, measured: Measured, layouts: dict[str, Path]) -> dict[str, float]:
    """For the variants in the twin: the compile() cost of what they compile at every start."""
    costs = {}
    for name, variant in VARIANTS.items():
        files = measured.loaded[name].compiled_files
        if variant.layout != "sources" and files:
            costs[name] = compile_ms(python, layouts[variant.layout], files)
    return costs


def compiled_notes(measured: Measured) -> list[str]:
    """What the twin's variants compile at every start, what that costs, and the ratio without it."""
    notes = []
    for number, name in enumerate(VARIANTS, start=1):
        if name not in measured.compile_ms:
            continue
        files = measured.loaded[name].compiled_files
        shown = ", ".join(files[:8]) + (f", ... ({len(files) - 8} more)" if len(files) > 8 else "")
        notes.append(
            f"note: ({number}) compiles {len(files)} module(s) from source at every start"
            f" (~{measured.compile_ms[name]:.0f} ms of compile()), shipped as source as they are not in"
            f" src/cold_modules.txt: {shown}"
        )
    if notes:
        med = medians(measured.samples, "to_answer_ms")
        handler = med["handler"] - measured.compile_ms.get("handler", 0.0)
        floor = med["floor"] - measured.compile_ms.get("floor", 0.0)
        notes.append(
            f"2/1 without that compiling (medians minus the compile() estimates): {handler:.0f} / {floor:.0f} ms"
            f" = {ratio(handler, floor):.2f} (an estimate: what 2/1 would be if both shipped .pyc for all they import)"
        )
    return notes


# ---------------------------------------------------------------- the section


def describe(python: str, sources: Path) -> str:
    lines = [
        f"interpreter: {python} -I -B (Python {PY_VERSION}, {os.uname().machine}), cwd = the layout",
        f"sys.path: the layout, {RUNTIME_SIM.relative_to(ROOT)} (the runtime's boto3), the standard library,"
        " the probe files (last)",
        f"twin: {TWIN.relative_to(ROOT)}, {pyc_count(TWIN)} .pyc (sourceless for the cold modules, __pycache__ for"
        " lambda_chat)",
        f"sources only: {parity(TWIN, sources)}; 0 .pyc; read-only (chmod -R a-w), and -B",
    ]
    return "\n".join(lines)


def check_untouched(sources: Path) -> None:
    """Nothing may have been cached between rounds: no .pyc in the sources copy, no __pycache__ written in the twin."""
    compiled = pyc_count(sources)
    if compiled:
        raise RuntimeError(f"{compiled} .pyc were written into the sources-only layout during the rounds")
    written = written_pycache(TWIN)
    if written:
        raise RuntimeError(f"{len(written)} __pycache__ directories were written into the twin during the rounds")


def check_sources_compiled(measured: Measured) -> None:
    """(3) is only the no-.pyc case if it loaded nothing compiled ahead."""
    loaded = measured.loaded["sources"]
    if loaded.sourceless or loaded.cached:
        raise RuntimeError(f"(3) loaded {loaded.sourceless + loaded.cached} modules from .pyc: not a sources-only run")


def measure_layouts(python: str, config: Config, env: dict[str, str]) -> Measured:
    with tempfile.TemporaryDirectory(prefix="lambda-chat-artifact-cold-") as scratch:
        sources, probe = Path(scratch) / "sources", Path(scratch) / "probe"
        started = time.monotonic()
        build_sources(python, sources)
        make_probe(python, probe)
        print(f"sources-only layout built in {time.monotonic() - started:.0f} s (pip install --target, no compile)")
        print(describe(python, sources))
        print(f"{config.rounds} rounds x {len(VARIANTS)} variants, interleaved, order rotated each round", flush=True)
        set_writable(sources, False)
        try:
            layouts = {"twin": TWIN, "sources": sources}
            measured = measure(python, layouts, probe, env, config.rounds)
            check_untouched(sources)
            check_sources_compiled(measured)
            measured.compile_ms.update(compile_costs(python, measured, layouts))
        finally:
            set_writable(sources, True)  # so that the scratch directory can be removed
    return measured


def report(measured: Measured) -> dict[str, float | str]:
    samples = measured.samples
    print(results_table(measured))
    print()
    print(ratios_table(samples))
    print()
    print(phases_table(samples))
    for note in compiled_notes(measured):
        print(f"\n{note}")
    med, rss = medians(samples, "to_answer_ms"), medians(samples, "rss_mib")
    handler_over_floor = ratio(med["handler"], med["floor"])
    print(
        f"\nTarget: cold start in the artifact's layout, (2) at most 1.00x (1): {handler_over_floor:.2f}x"
        f" -> {verdict(handler_over_floor <= 1.0)}; without .pyc (3) takes {ratio(med['sources'], med['handler']):.2f}x"
        " as long as (2)"
    )
    return {
        "handler_over_floor": handler_over_floor,
        "sources_over_handler": ratio(med["sources"], med["handler"]),
        "floor_ms": med["floor"],
        "handler_ms": med["handler"],
        "sources_ms": med["sources"],
        "floor_rss_mib": rss["floor"],
        "handler_rss_mib": rss["handler"],
        "sources_rss_mib": rss["sources"],
    }


def short(error: BaseException, width: int = 110) -> str:
    """One line for the summary: a failed command and its exit status, or the first and the last line of an error
    (the last is the child's exception)."""
    if isinstance(error, subprocess.CalledProcessError):
        command = " ".join(str(part) for part in error.cmd[:4]) if isinstance(error.cmd, list) else str(error.cmd)
        text = f"`{command} ...` exit {error.returncode} (output in section 3)"
    else:
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
        text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return text if len(text) <= width else text[: width - 3] + "..."


def run(stack: Stack, config: Config) -> dict[str, float | str]:
    """The section; on failure it prints why and returns {"error": ...} instead of figures."""
    print(heading("3. Cold start in the artifact's layout: x86_64 twin, python3.13, whole processes"))
    try:
        with lambda_python_env():
            python = real_interpreter(check_artifact.PYTHON)
            ensure_twin()
        return report(measure_layouts(python, config, child_env(stack)))
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        print(f"FAILED: {error}")
        return {"error": short(error)}


def main() -> int:
    return standalone(run)


if __name__ == "__main__":
    run_main(main)
