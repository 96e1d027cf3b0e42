"""The real SAM CLI on the function, in containers, against the local stack of `make run`: `make sam-local`.

1. a Docker engine: the one that runs; else (Debian, root: a machine like CI's) docker.io from apt and a `dockerd`
   started for this run, and stopped after it;
2. the base image: AWS's public.ecr.aws/lambda/python:3.13 where it can be pulled; else a STAND-IN, built offline
   from the Debian and PyPI registries by local/standin/ (Debian 13's Python 3.13 and AWS's open-source Runtime
   Interface Client), tagged lambda-chat/standin-lambda-python:3.13 and rebuilt only when its recipe changes;
3. `sam build` of a copy of template.yaml for this machine's architecture (x86_64 here: under qemu an arm64
   invoke takes 45 s), into .aws-sam/sam-local/ (`make build`'s arm64 artifact stays as it is);
4. moto_server as Secrets Manager and DynamoDB (the key's secret, the budget and idempotency tables) and the
   local model, or OpenAI with OPENAI_API_KEY (and OPENAI_BASE_URL) from the shell: the servers listen on the
   Docker bridge's address, where the containers reach the host, and the functions are pointed at them;
5. `sam local invoke ChatFunction` on each file of events/, printing its envelope and the container's REPORT line;
6. `sam local start-api`, and POST /chat through the key authorizer, with an API key and without;
7. stops everything it started, also on Ctrl-C or failure: start-api and its containers, the servers, dockerd.

On an engine this run started, with a local backend, the containers reach the host only: a firewall rule
refuses whatever they send elsewhere (removed at the end). Logs: .local/logs/.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from local.invoke import describe
from local.model import LocalModelServer
from local.moto import FAKE_AWS_ENV, LOG_DIR, MotoServer, free_port, wait_until
from local.run import BUDGET_TABLE, SECRET_ID

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
WORK = ROOT / ".aws-sam" / "sam-local"
STANDIN = Path(__file__).resolve().parent / "standin"
SAM = ROOT / ".local" / "sam-venv" / "bin" / "sam"
PIP = ROOT / ".venv" / "bin" / "pip"
AWS_IMAGE = "public.ecr.aws/lambda/python:3.13"
STANDIN_IMAGE = "lambda-chat/standin-lambda-python:3.13"
RECIPE_LABEL = "lambda-chat.standin-recipe"
IDEMPOTENCY_TABLE = "lambda-chat-idempotency"
FUNCTION = "ChatFunction"
LOCAL_API_KEY = "local-api-key"
SAM_PYENV = os.environ.get("SAM_PYENV", "3.11.7:3.13.0")  # where sam build finds python3.13 (Makefile: SAM_PYENV)
ISOLATION_RULE = ["DOCKER-USER", "-i", "docker0", "-j", "REJECT"]  # forwarded traffic only: the host stays reachable


class NoDocker(RuntimeError):
    """No Docker engine here, and none can be installed and started."""


def run(command: Sequence[str], *, timeout: float = 600, **options: Any) -> subprocess.CompletedProcess[str]:
    """Run a command to its end; raise with the end of its output if it fails."""
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False, **options)
    if result.returncode != 0:
        lines = (result.stdout + result.stderr).splitlines()
        output = "\n".join(line for line in lines if "WARNING: Location" not in line)
        raise RuntimeError(f"{' '.join(command[:4])} ... failed ({result.returncode}):\n{output[-3000:]}")
    return result


# --- 1. the Docker engine ---------------------------------------------------------------------------------------


@dataclass
class Engine:
    """A Docker engine: its client binary, and whether this run started it (then this run stops it)."""

    docker: str
    started: bool


def docker_client() -> str | None:
    return shutil.which("docker")


def engine_answers(docker: str) -> bool:
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def why_no_engine_can_be_had() -> str | None:
    """None if this machine can install and start an engine; else the reason it cannot."""
    if sys.platform != "linux":
        return f"no Docker engine answers, and on {sys.platform} this script does not install one: start Docker"
    if os.geteuid() != 0:
        return "no Docker engine answers, and installing and starting one (docker.io, dockerd) needs root"
    if not shutil.which("dockerd") and not shutil.which("apt-get"):
        return "no Docker engine answers, no dockerd here, and no apt-get to install docker.io with"
    return None


def apt_install(*packages: str) -> None:
    """Debian packages, from the archive (apt-get update first only if the package lists lack them)."""
    print(f"installing {', '.join(packages)}: apt-get install", flush=True)
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run(command, env=env)
    except RuntimeError:  # package lists missing or stale
        run(["apt-get", "update", "-q"], env=env)
        run(command, env=env)


def clear_stale_pid_file(path: Path = Path("/var/run/docker.pid")) -> None:
    """A dockerd killed earlier leaves its pid file, and a new one refuses to start while it is there."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    if not Path(f"/proc/{pid}").exists():
        path.unlink(missing_ok=True)


def start_dockerd(stack: ExitStack, docker: str) -> None:
    """`dockerd` in the background (no systemd here), its output in .local/logs/dockerd.log; stopped at the end."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    clear_stale_pid_file()
    log = LOG_DIR / "dockerd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(["dockerd"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(stop_process, process, 30)
    try:
        wait_until(lambda: engine_answers(docker), timeout=60, process=process)
    except Exception as exc:
        raise NoDocker(f"dockerd did not start ({exc}); see {log}") from None
    print(f"started dockerd (pid {process.pid}); it is stopped at the end", flush=True)


def stop_process(process: subprocess.Popen[Any], timeout: float = 10, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ensure_engine(stack: ExitStack) -> Engine:
    """The Docker engine that answers; else docker.io installed and dockerd started; else NoDocker, saying why."""
    docker = docker_client()
    if docker and engine_answers(docker):
        return Engine(docker, started=False)
    reason = why_no_engine_can_be_had()
    if reason:
        raise NoDocker(reason)
    if not shutil.which("dockerd"):
        apt_install("docker.io")  # dockerd, containerd, runc, iptables
    docker = docker_client()
    if docker is None:
        raise NoDocker("docker.io is installed but no docker client is on PATH")
    start_dockerd(stack, docker)
    return Engine(docker, started=True)


def bridge_address(docker: str) -> str:
    """The host's address on Docker's default bridge (172.17.0.1 by default): where containers reach the host.

    Servers on loopback are out of the containers' reach (so is --docker-network host, with the SAM CLI).
    """
    result = run([docker, "network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}"])
    config = (json.loads(result.stdout) or [{}])[0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))  # the bridge's gateway is its first host


def can_listen_on(address: str) -> bool:
    """False where the bridge is not on this host (Docker Desktop runs it in a VM)."""
    try:
        with socket.socket() as sock:
            sock.bind((address, 0))
        return True
    except OSError:
        return False


@contextmanager
def containers_reach_only_the_host(engine: Engine) -> Iterator[None]:
    """On an engine this run started: refuse whatever containers send beyond the host (a rule of our own)."""
    iptables = shutil.which("iptables")
    if not engine.started or iptables is None:
        yield
        return
    run([iptables, "-I", *ISOLATION_RULE])
    try:
        yield
    finally:
        subprocess.run([iptables, "-D", *ISOLATION_RULE], capture_output=True, check=False)


# --- 2. the base image ------------------------------------------------------------------------------------------


def machine_arch() -> str:
    """This machine's Lambda architecture: the one its containers run natively."""
    return "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"


def pip_platform(arch: str) -> str:
    return "manylinux2014_aarch64" if arch == "arm64" else "manylinux2014_x86_64"


def recipe_hash(arch: str) -> str:
    """The stand-in's cache key: every file of its recipe (local/standin/), and the architecture."""
    digest = hashlib.sha256(arch.encode())
    for path in sorted(STANDIN.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def image_label(docker: str, image: str, label: str) -> str | None:
    result = subprocess.run(
        [docker, "image", "inspect", image, "--format", f'{{{{ index .Config.Labels "{label}" }}}}'],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return result.stdout.strip() if result.returncode == 0 else None


def build_standin(docker: str, arch: str, key: str) -> None:
    """Debootstrap the root file system (local/standin/build-rootfs.sh), then `FROM scratch` plus it."""
    print(f"building the stand-in base image {STANDIN_IMAGE} (recipe {key}; about a minute, once)", flush=True)
    started = time.monotonic()
    if not shutil.which("debootstrap"):
        apt_install("debootstrap")
    with tempfile.TemporaryDirectory(prefix="lambda-chat-standin-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run([str(STANDIN / "build-rootfs.sh"), str(rootfs), str(PIP), pip_platform(arch)], timeout=900)
        run(["tar", "-C", str(rootfs), "-cf", str(Path(tmp) / "rootfs.tar"), "."])
        shutil.rmtree(rootfs)
        shutil.copy(STANDIN / "Dockerfile", Path(tmp) / "Dockerfile")
        docker_platform = "linux/arm64" if arch == "arm64" else "linux/amd64"
        run([docker, "build", "--quiet", "--platform", docker_platform, "--label", f"{RECIPE_LABEL}={key}",
             "--tag", STANDIN_IMAGE, tmp])  # fmt: skip
    print(f"built {STANDIN_IMAGE} in {time.monotonic() - started:.0f} s", flush=True)


def ensure_standin(docker: str, arch: str) -> str:
    """The stand-in image, built unless one from the same recipe is there."""
    key = recipe_hash(arch)
    if image_label(docker, STANDIN_IMAGE, RECIPE_LABEL) != key:
        build_standin(docker, arch, key)
    else:
        print(f"stand-in base image {STANDIN_IMAGE}: cached (recipe {key})", flush=True)
    return STANDIN_IMAGE


def aws_image_available(docker: str) -> bool:
    """AWS's base image is there, or can be pulled (not from here: public.ecr.aws is out of reach)."""
    if image_label(docker, AWS_IMAGE, "__none__") is not None:
        return True
    print(f"pulling {AWS_IMAGE}", flush=True)
    try:
        pulled = subprocess.run([docker, "pull", AWS_IMAGE], capture_output=True, timeout=300, check=False)
        return pulled.returncode == 0
    except subprocess.TimeoutExpired:
        return False


def base_image(engine: Engine, arch: str) -> str:
    """AWS's image on an engine that was already there and can pull it; else the stand-in (LAMBDA_CHAT_SAM_IMAGE=
    standin forces it, =aws forbids it)."""
    choice = os.environ.get("LAMBDA_CHAT_SAM_IMAGE", "")
    if choice == "aws" or (choice != "standin" and not engine.started and aws_image_available(engine.docker)):
        if choice == "aws" and not aws_image_available(engine.docker):
            raise RuntimeError(f"{AWS_IMAGE} cannot be pulled (LAMBDA_CHAT_SAM_IMAGE=aws)")
        return AWS_IMAGE
    if not engine.started and choice != "standin":
        print(f"{AWS_IMAGE} cannot be pulled here: using the stand-in", flush=True)
    return ensure_standin(engine.docker, arch)


# --- 3. sam build -----------------------------------------------------------------------------------------------


def local_template(arch: str, source: Path = ROOT / "template.yaml") -> Path:
    """template.yaml for this machine's architecture (its one `Architectures: [arm64]`, in Globals)."""
    text = source.read_text()
    if arch != "arm64":
        if text.count("Architectures: [arm64]") != 1:
            raise RuntimeError("template.yaml: expected one `Architectures: [arm64]` (in Globals) to replace")
        text = text.replace("Architectures: [arm64]", f"Architectures: [{arch}]")
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "template.yaml"
    path.write_text(text)
    return path


def sam_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The SAM CLI's environment: fake AWS credentials (the containers get them), no telemetry.

    `sam local` hands a function the shell's value of any variable the template declares: the endpoints are
    taken out here, and set through --env-vars and --parameter-overrides instead.
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "OPENAI_"))}
    return {**env, **FAKE_AWS_ENV, "SAM_CLI_TELEMETRY": "0", **(extra or {})}


def sam_build(arch: str) -> Path:
    """`sam build` into .aws-sam/sam-local/build (cached); the built template's path."""
    template = local_template(arch)
    started = time.monotonic()
    build_dir = WORK / "build"
    run(
        [str(SAM), "build", "--template-file", str(template), "--base-dir", str(ROOT),
         "--build-dir", str(build_dir), "--cached", "--cache-dir", str(WORK / "cache")],
        cwd=ROOT, env=sam_env({"PLATFORM": pip_platform(arch), "PYENV_VERSION": SAM_PYENV}),
    )  # fmt: skip
    print(f"sam build ({arch}): {time.monotonic() - started:.0f} s", flush=True)
    return build_dir / "template.yaml"


# --- 4. the local stack -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    """An OpenAI-compatible server the containers can reach: its base URL and the key it wants."""

    base_url: str
    key: str
    model: str | None = None  # the model to ask for by default (a local server's own name)
    description: str = ""


@dataclass
class LocalStack:
    """What the functions are pointed at: --env-vars (variables) and --parameter-overrides (parameters)."""

    moto: MotoServer
    upstream: Upstream
    variables: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    env_vars_file: Path = WORK / "env-vars.json"

    def sam_options(self) -> list[str]:
        self.env_vars_file.parent.mkdir(parents=True, exist_ok=True)
        self.env_vars_file.write_text(json.dumps({"Parameters": self.variables}, indent=2))
        overrides = [f"{name}={value}" for name, value in self.parameters.items()]
        return ["--env-vars", str(self.env_vars_file), "--parameter-overrides", *overrides]


class BridgeMotoServer(MotoServer):
    """moto_server on the Docker bridge's address instead of loopback."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30) -> BridgeMotoServer:
        server = str(Path(__file__).with_name("moto_atomic.py"))
        self._server.start(
            lambda port: [sys.executable, "-P", server, "-H", self.host, "-p", str(port)],
            lambda port: port_open(self.host, port),
            timeout=timeout,
            env={**os.environ, **FAKE_AWS_ENV},
        )
        return self


class BridgeModelServer(LocalModelServer):
    """The local model's server (llama.cpp) on the Docker bridge's address instead of loopback."""

    def __init__(self, host: str, **options: Any) -> None:
        super().__init__(**options)
        self.host = host

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self, port: int) -> list[str]:
        command = super().command(port)
        command[command.index("--host") + 1] = self.host
        return command

    def _serves_models(self, port: int) -> bool:
        request = urllib.request.Request(f"{self.base_url}/models", headers={"Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return bool(json.load(response).get("data"))
        except (OSError, ValueError):
            return False


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def start_upstream(stack: ExitStack, host: str) -> Upstream:
    """OpenAI with the shell's OPENAI_API_KEY (and OPENAI_BASE_URL); else the local model, on the bridge."""
    if os.environ.get("OPENAI_API_KEY"):
        base_url = os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        return Upstream(base_url, os.environ["OPENAI_API_KEY"], description=f"{base_url}, key from your shell")
    key = secrets.token_urlsafe(24)
    model = BridgeModelServer(host, api_key=key).start()
    stack.callback(model.stop)
    return Upstream(model.base_url, key, model.alias, f"a local model: llama.cpp serving {model.alias}")


def start_local_stack(stack: ExitStack, host: str, upstream: Upstream | None = None) -> LocalStack:
    """moto_server with the key's secret and the two tables; the upstream (given, or started here)."""
    moto = BridgeMotoServer(host).start()
    stack.callback(moto.stop)
    upstream = upstream or start_upstream(stack, host)
    moto.secrets_client().create_secret(Name=SECRET_ID, SecretString=upstream.key)
    moto.create_budget_table(BUDGET_TABLE)
    moto.create_idempotency_table(IDEMPOTENCY_TABLE)
    variables = {
        "AWS_ENDPOINT_URL": moto.endpoint,  # boto3: Secrets Manager and DynamoDB (and any other service) at moto
        "OPENAI_API_KEY_SECRET_ID": SECRET_ID,  # sam local names resources by their logical ids: local names here
        "IDEMPOTENCY_TABLE": IDEMPOTENCY_TABLE,
        "BUDGET_TABLE": BUDGET_TABLE,
    }
    parameters = {"OpenAIBaseUrl": upstream.base_url}
    if upstream.model:  # a local model: its own name, and no price (budgets count its tokens only)
        parameters |= {"DefaultModel": upstream.model, "EmbeddingModels": upstream.model, "AllowUnpricedModels": "true"}
    return LocalStack(moto, upstream, variables, parameters)


# --- 5. sam local invoke ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    """One `sam local invoke`: the function's result (None if it gave none), its REPORT lines, its time."""

    event: str
    result: Any
    reports: list[str]
    seconds: float
    output: str

    @property
    def envelope(self) -> Any:
        if isinstance(self.result, dict) and "statusCode" in self.result:
            return json.loads(self.result["body"])
        return self.result

    @property
    def status(self) -> int | None:
        return self.result.get("statusCode") if isinstance(self.result, dict) else None


def last_json(text: str) -> Any:
    """The function's result: the last line of `sam local invoke`'s stdout that is JSON."""
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def image_options(image: str) -> list[str]:
    return [] if image == AWS_IMAGE else ["--skip-pull-image", "--invoke-image", image]


def invoke(built: Path, local: LocalStack, image: str, event: Path) -> Invocation:
    started = time.monotonic()
    result = subprocess.run(
        [str(SAM), "local", "invoke", FUNCTION, "--template", str(built), "--event", str(event),
         "--region", FAKE_AWS_ENV["AWS_REGION"], "--skip-pull-image", *image_options(image), *local.sam_options()],
        cwd=ROOT, env=sam_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = result.stdout + "\n" + result.stderr
    reports = [line.strip() for line in output.splitlines() if line.lstrip().startswith("REPORT RequestId")]
    return Invocation(event.name, last_json(result.stdout), reports, time.monotonic() - started, output)


def invoke_all(built: Path, local: LocalStack, image: str, events: Sequence[Path], jobs: int = 1) -> list[Invocation]:
    """Each event file through `sam local invoke` (`jobs` at a time), printed in order; the whole output in a log."""
    invocations = []
    log = LOG_DIR / "sam-local-invoke.log"
    with log.open("w") as out, ThreadPoolExecutor(max_workers=jobs) as pool:
        running = [pool.submit(invoke, built, local, image, path) for path in events]
        for path, future in zip(events, running, strict=True):
            done = future.result()
            invocations.append(done)
            out.write(f"===== {path.name} ({done.seconds:.1f} s)\n{done.output}\n")
            if done.result is None:
                print(f"{path.name}: no result from sam local invoke; see {log}", flush=True)
                continue
            print(describe(path.name, done.result), flush=True)
            print("\n".join(done.reports) + f"\n(sam local invoke: {done.seconds:.1f} s)\n", flush=True)
    return invocations


# --- 6. sam local start-api -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiCall:
    name: str
    headers: dict[str, str]
    body: Any
    status: int = 0
    answer: Any = None
    seconds: float = 0.0


API_CALLS = [
    ApiCall("x-api-key", {"x-api-key": LOCAL_API_KEY}, {"prompt": "Say hello in three words.", "max_tokens": 16}),
    ApiCall("Authorization: Bearer", {"Authorization": f"Bearer {LOCAL_API_KEY}"},
            {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8}),
    ApiCall("no API key", {}, {"prompt": "Say hello.", "max_tokens": 8}),
    ApiCall("x-api-key, invalid body", {"x-api-key": LOCAL_API_KEY}, {"prompt": "", "temperature": 9}),
]  # fmt: skip


@contextmanager
def start_api(built: Path, local: LocalStack, image: str) -> Iterator[str]:
    """`sam local start-api` on loopback (warm containers); its base URL. Stopped, with its containers, after."""
    port = free_port()
    log = LOG_DIR / "sam-local-start-api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(SAM), "local", "start-api", "--template", str(built), "--host", "127.0.0.1", "--port", str(port),
             "--region", FAKE_AWS_ENV["AWS_REGION"], "--warm-containers", "LAZY", "--skip-pull-image",
             *image_options(image), *local.sam_options()],
            cwd=ROOT, env=sam_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(lambda: port_open("127.0.0.1", port), timeout=120, process=process)
        yield f"http://127.0.0.1:{port}"
    except Exception as exc:
        raise RuntimeError(f"sam local start-api: {exc}; see {log}") from None
    finally:
        stop_process(process, timeout=30, sig=signal.SIGINT)  # as Ctrl-C: it removes its warm containers


def call_api(base_url: str, call: ApiCall) -> ApiCall:
    request = urllib.request.Request(
        f"{base_url}/chat", data=json.dumps(call.body).encode(), method="POST",
        headers={"Content-Type": "application/json", **call.headers},
    )  # fmt: skip
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = raw.decode(errors="replace")
    return ApiCall(call.name, call.headers, call.body, status, answer, time.monotonic() - started)


def api_calls(base_url: str, calls: Sequence[ApiCall] = API_CALLS) -> list[ApiCall]:
    """POST /chat with each call's headers and body, printed as each answers."""
    answered = []
    for call in calls:
        done = call_api(base_url, call)
        answered.append(done)
        print(f"POST /chat ({done.name}): HTTP {done.status} in {done.seconds:.2f} s", flush=True)
        print(json.dumps(done.answer, indent=2, ensure_ascii=False) + "\n", flush=True)
    return answered


# --- 7. everything, and the clean-up ----------------------------------------------------------------------------


def sam_containers(docker: str) -> set[str]:
    result = subprocess.run(
        [docker, "ps", "-aq", "--no-trunc", "--filter", "label=sam.cli.container.type=lambda"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return set(result.stdout.split())


def remove_new_containers(docker: str, before: set[str]) -> None:
    """The SAM CLI's containers that this run left behind (a killed start-api leaves its warm ones)."""
    left = sorted(sam_containers(docker) - before)
    if left:
        subprocess.run([docker, "rm", "-f", *left], capture_output=True, check=False)
        print(f"removed {len(left)} container(s) the SAM CLI left", flush=True)


@dataclass
class Session:
    """What one run set up: the engine, the image, the built template, the local stack."""

    engine: Engine
    image: str
    built: Path
    local: LocalStack
    host: str


def set_up(stack: ExitStack, upstream_for: Callable[[str], Upstream] | None = None) -> Session:
    """Engine, image, build and local stack, each undone by `stack`; `upstream_for(host)`: a given upstream."""
    engine = ensure_engine(stack)
    before = sam_containers(engine.docker)
    stack.callback(remove_new_containers, engine.docker, before)
    host = bridge_address(engine.docker)
    if not can_listen_on(host):
        raise RuntimeError(f"the Docker bridge's address {host} is not on this host (Docker Desktop?): not supported")
    arch = machine_arch()
    with ThreadPoolExecutor(max_workers=1) as pool:  # the image (network, disk) while sam build runs (CPU)
        image_ready = pool.submit(base_image, engine, arch)
        built = sam_build(arch)
        image = image_ready.result()
    upstream = upstream_for(host) if upstream_for else None
    local = start_local_stack(stack, host, upstream)
    if local.upstream.base_url.startswith(f"http://{host}:"):  # a local upstream: nothing needs the internet
        stack.enter_context(containers_reach_only_the_host(engine))
    return Session(engine, image, built, local, host)


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events", nargs="*", type=Path, help="event files (default: all of events/)")
    parser.add_argument("--jobs", type=int, default=1, help="invocations run at a time (default 1)")
    args = parser.parse_args(argv)
    events = args.events or sorted(EVENTS.glob("*.json"))
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            session = set_up(stack)
            print(f"\nbase image: {session.image}; servers on the Docker bridge, {session.host}")
            print(f"moto_server: {session.local.moto.endpoint}; upstream: {session.local.upstream.description}\n")
            invocations = invoke_all(session.built, session.local, session.image, events, args.jobs)
            with start_api(session.built, session.local, session.image) as base_url:
                print(f"sam local start-api on {base_url}\n", flush=True)
                api_calls(base_url)
            print("stopping what this run started", flush=True)
    except NoDocker as exc:
        print(f"make sam-local: {exc}", file=sys.stderr)
        return 2
    missing = [done.event for done in invocations if done.result is None]
    print(f"make sam-local: {len(invocations)} invocations, {time.monotonic() - started:.0f} s in all")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
