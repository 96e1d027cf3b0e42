"""The deployment artifact that `make build` (sam build, arm64) leaves in .aws-sam/build/ChatFunction.

Sizes unzipped and zipped (zipfile, deflate level 6, into a temporary file), with and without boto3, botocore
and s3transfer (the Lambda Python runtime ships them), the count of .pyc files (and which Python they are
for), whether aiohttp (or its dependencies) is inside, the zipped size of packaging variants (without .pyc,
sourceless), the largest packages, and whether the lambda_chat inside matches src/.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

from benchmarks.common import MIB, ROOT, heading, table, verdict

BUILD_DIR = ROOT / ".aws-sam" / "build" / "ChatFunction"
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
AIOHTTP_FAMILY = ("aiohttp", "aiohappyeyeballs", "aiosignal", "frozenlist", "multidict", "yarl", "propcache")
ZIP_LIMIT_MIB = 8
TOP_ENTRIES = 12


def files_under(root: Path) -> list[Path]:
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            if path.is_file():
                found.append(path)
    return sorted(found)


def top_level(path: Path, root: Path) -> str:
    return path.relative_to(root).parts[0]


def distribution(entry: str) -> str:
    """The package an entry belongs to: `botocore-1.44.8.dist-info` -> `botocore`, `six.py` -> `six`."""
    name = entry.removesuffix(".py")
    for suffix in (".dist-info", ".data"):
        if name.endswith(suffix):
            name = name.removesuffix(suffix).rsplit("-", 1)[0]
    return name.lower().replace("-", "_")


def is_runtime_provided(entry: str) -> bool:
    return distribution(entry) in RUNTIME_PROVIDED


def zip_sizes(root: Path, files: list[Path]) -> tuple[int, int, dict[str, int]]:
    """Zipped size without and with the runtime-provided packages, and the compressed bytes of every entry."""
    first = [p for p in files if not is_runtime_provided(top_level(p, root))]
    rest = [p for p in files if is_runtime_provided(top_level(p, root))]
    with tempfile.TemporaryDirectory(prefix="lambda-chat-artifact-") as scratch:
        archive = Path(scratch) / "function.zip"
        _add(archive, "w", root, first)
        without = archive.stat().st_size
        _add(archive, "a", root, rest)
        with_all = archive.stat().st_size
        with zipfile.ZipFile(archive) as done:
            compressed = {info.filename: info.compress_size for info in done.infolist()}
    return without, with_all, compressed


def subset_zip_size(compressed: dict[str, int], keep: set[str]) -> int:
    """The size a zip of only `keep` would have: compressed data plus zipfile's per-entry headers (local 30 and
    central 46 bytes, each with the name) and the 22-byte end record."""
    return sum(compressed[name] + 76 + 2 * len(name.encode()) for name in keep) + 22


PYC_MAGIC = {3495: "cpython-311", 3531: "cpython-312", 3571: "cpython-313"}  # the final magic of each release


def pyc_tags(files: list[Path]) -> dict[str, int]:
    """How many .pyc files are for each Python (from the magic number), split into __pycache__ and sourceless."""
    tags: dict[str, int] = defaultdict(int)
    for path in files:
        if path.suffix == ".pyc":
            with path.open("rb") as file:
                magic = int.from_bytes(file.read(2), "little")
            layout = "__pycache__" if path.parent.name == "__pycache__" else "sourceless"
            tags[f"{PYC_MAGIC.get(magic, f'magic {magic}')} {layout}"] += 1
    return dict(tags)


def runtime_tag() -> str | None:
    """`cpython-313` for `Runtime: python3.13` in template.yaml."""
    match = re.search(r"Runtime:\s*python(\d)\.(\d+)", (ROOT / "template.yaml").read_text())
    return f"cpython-{match.group(1)}{match.group(2)}" if match else None


def variants_table(compressed: dict[str, int], zipped: int) -> str:
    """Zipped size of packaging variants, computed from the same archive's entries."""
    names = {name for name in compressed if not is_runtime_provided(name.split("/", 1)[0])}
    pyc = {name for name in names if name.endswith(".pyc")}
    compiled_sources = {_source_of(name) for name in pyc}
    rows = [
        ("as built", zipped),
        ("without boto3/botocore/s3transfer", subset_zip_size(compressed, names)),
        ("  ... and without any .pyc (sources only)", subset_zip_size(compressed, names - pyc)),
        ("  ... .pyc only where compiled (sourceless, no .py)", subset_zip_size(compressed, names - compiled_sources)),
    ]
    return table(
        ("packaging variant", "zipped MiB"), [(label, size / MIB) for label, size in rows], "Packaging variants"
    )


def _source_of(pyc_name: str) -> str:
    """`pkg/__pycache__/mod.cpython-313.pyc` -> `pkg/mod.py`; `pkg/mod.pyc` -> `pkg/mod.py`."""
    directory, _, filename = pyc_name.rpartition("/")
    if directory.endswith("__pycache__"):
        directory = directory.removesuffix("__pycache__").rstrip("/")
        filename = filename.split(".", 1)[0] + ".py"
    else:
        filename = filename.removesuffix("c")
    return f"{directory}/{filename}" if directory else filename


def _add(archive: Path, mode: str, root: Path, files: list[Path]) -> None:
    with zipfile.ZipFile(archive, mode, compression=zipfile.ZIP_DEFLATED, compresslevel=6) as out:  # type: ignore[arg-type]
        for path in files:
            out.write(path, path.relative_to(root).as_posix())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_match(build: Path) -> str:
    """Does the lambda_chat package in the build match src/lambda_chat (.py files)?"""
    built = {p.name: digest(p) for p in (build / "lambda_chat").glob("*.py")}
    source = {p.name: digest(p) for p in (ROOT / "src" / "lambda_chat").glob("*.py")}
    differ = sorted(name for name in built.keys() & source.keys() if built[name] != source[name])
    missing = sorted(source.keys() - built.keys())
    extra = sorted(built.keys() - source.keys())
    if not (differ or missing or extra):
        return "yes (every .py identical)"
    parts = [f"differ: {', '.join(differ)}" if differ else "", f"not in build: {', '.join(missing)}" if missing else ""]
    parts.append(f"only in build: {', '.join(extra)}" if extra else "")
    return "NO, the build is stale (" + "; ".join(p for p in parts if p) + ")"


def run() -> dict[str, float | bool]:
    print(heading("6. Deployment artifact (.aws-sam/build/ChatFunction)"))
    if not BUILD_DIR.is_dir():
        print(f"{BUILD_DIR} does not exist: run `make build` (sam build) first. Skipped.")
        return {}
    files = files_under(BUILD_DIR)
    if not files:
        print(f"{BUILD_DIR} is empty (a build in progress?). Skipped.")
        return {}
    sizes: dict[str, int] = defaultdict(int)
    for path in files:
        sizes[top_level(path, BUILD_DIR)] += path.stat().st_size
    unzipped = sum(sizes.values())
    unzipped_without = sum(size for entry, size in sizes.items() if not is_runtime_provided(entry))
    zipped_without, zipped, compressed = zip_sizes(BUILD_DIR, files)
    pyc = sum(1 for p in files if p.suffix == ".pyc")
    aiohttp = sorted({distribution(e) for e in sizes if distribution(e) in AIOHTTP_FAMILY})
    rows = [
        ("files", len(files), "", ""),
        ("unzipped MiB", unzipped / MIB, unzipped_without / MIB, (unzipped - unzipped_without) / MIB),
        ("zipped MiB (deflate 6)", zipped / MIB, zipped_without / MIB, (zipped - zipped_without) / MIB),
    ]
    print(table(("", "as built", "without boto3/botocore/s3transfer", "boto3+botocore+s3transfer"), rows))
    tags = pyc_tags(files)
    expected = runtime_tag()
    tag_text = ", ".join(f"{count} {tag}" for tag, count in sorted(tags.items())) or "none"
    print(f".pyc files: {pyc} ({tag_text}); the template's runtime is {expected or 'unknown'}")
    if pyc == 0:
        print("  no .pyc: Lambda's code directory is read-only, so every cold start compiles every imported module")
    print(f"aiohttp inside: {'YES (' + ', '.join(aiohttp) + ')' if aiohttp else 'no'}")
    print(f"lambda_chat in the build matches src/: {source_match(BUILD_DIR)}")
    print()
    print(variants_table(compressed, zipped))
    print()
    per_entry: dict[str, int] = defaultdict(int)
    for name, size in compressed.items():
        per_entry[name.split("/", 1)[0]] += size
    by_package: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for entry, size in sizes.items():
        by_package[distribution(entry)][0] += size
        by_package[distribution(entry)][1] += per_entry.get(entry, 0)
    largest = sorted(by_package.items(), key=lambda item: item[1][1], reverse=True)[:TOP_ENTRIES]
    print(
        table(
            ("package (with its dist-info)", "unzipped MiB", "zipped MiB", "share of zip"),
            [(name, u / MIB, z / MIB, f"{100 * z / zipped:.1f}%") for name, (u, z) in largest],
            f"Largest {TOP_ENTRIES} packages by zipped size",
        )
    )
    ok = zipped / MIB <= ZIP_LIMIT_MIB and not aiohttp
    print(
        f"\nTarget: zipped artifact at most {ZIP_LIMIT_MIB} MiB without aiohttp: {zipped / MIB:.2f} MiB as built"
        f" ({zipped_without / MIB:.2f} MiB without the runtime's boto3 stack), aiohttp {'in' if aiohttp else 'out'}"
        f" -> {verdict(ok)}"
    )
    return {"zipped_mib": zipped / MIB, "zipped_without_mib": zipped_without / MIB, "aiohttp": bool(aiohttp)}


def main() -> int:
    run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
