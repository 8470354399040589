"""Foreign-architecture environments: a Debian root filesystem run under qemu-user.

``shipei env create`` builds one from a spec of ``kind = "rootfs"``:

1. ``debootstrap --foreign --arch=ARCH`` downloads and unpacks the base system and the
   requested Debian packages (``python3``); the second stage would need to execute
   foreign binaries through binfmt_misc, which a container may not have, so every
   downloaded package is unpacked with ``dpkg-deb -x`` instead.
2. The host's pip installs the registry wheels for the foreign platform
   (``--platform``, ``--only-binary=:all:``) into ``/opt/shipei/site`` of the root
   filesystem: nothing is built or run under emulation while installing.
3. The installed versions are read from the wheels' metadata on the host.

A worker is started by :func:`rootfs_launch`: in a private mount namespace
(``unshare -m``) it mounts ``/proc``, ``/dev`` and ``/tmp`` into the root filesystem,
bind-mounts a cpuinfo of the emulated CPU over ``/proc/cpuinfo`` (onnxruntime's cpuinfo
library parses it and crashes on the host's x86 one), binds the harness's packages at
their host paths, and runs the foreign ``python3`` through the static qemu emulator
inside a ``chroot``. Timings from such a worker are emulated, never performance figures.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.environments.spec import EnvSpec, Launch

SITE = "opt/shipei/site"
DEBIAN_ARCH_TO_MACHINE = {"arm64": "aarch64", "riscv64": "riscv64", "ppc64el": "ppc64le",
                          "s390x": "s390x", "loong64": "loongarch64"}

#: /proc/cpuinfo of a Kunpeng 920-class core (implementer 0x48 HiSilicon, part 0xd01),
#: what onnxruntime's cpuinfo library reads to pick its aarch64 kernels
KUNPENG_CPUINFO = """\
processor\t: {index}
BogoMIPS\t: 200.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm \
jscvt fcma dcpop asimddp asimdfhm
CPU implementer\t: 0x48
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd01
CPU revision\t: 0
"""

CPUINFO_TEMPLATES = {"kunpeng-920": KUNPENG_CPUINFO}


def _run(command: list[str], what: str, progress: Callable[[str], None]) -> str:
    from harness.environments.spec import EnvError

    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise EnvError(f"{what} needs {command[0]!r}, which is not installed "
                       "(apt-get install qemu-user-static debootstrap)") from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EnvError(f"{what} failed (exit {result.returncode}): {tail[0]}")
    return result.stdout


def host_debian_mirror(sources: Path = Path("/etc/apt/sources.list.d/debian.sources")) -> str:
    """The Debian mirror the host's apt already uses (deb822 or one-line format)."""
    from harness.environments.spec import EnvError

    candidates = [sources, Path("/etc/apt/sources.list")]
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        found = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or re.search(
            r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+/debian)\s", text, re.M)
        if found:
            return found.group(1)
    raise EnvError("no Debian mirror in the host's apt sources; set [rootfs].mirror in the spec")


def build_rootfs(spec: EnvSpec, root: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Build the root filesystem a ``kind = "rootfs"`` spec declares."""
    from harness.environments.spec import EnvError, pip_install

    options = spec.rootfs
    arch = str(options.get("arch", "arm64"))
    machine = DEBIAN_ARCH_TO_MACHINE.get(arch)
    if machine is None:
        raise EnvError(f"rootfs arch {arch!r} is not one of {', '.join(DEBIAN_ARCH_TO_MACHINE)}")
    emulator = shutil.which(str(options.get("emulator", f"qemu-{machine}-static")))
    if emulator is None:
        raise EnvError(f"no qemu-{machine}-static on PATH (apt-get install qemu-user-static)")
    suite = str(options.get("suite", "bookworm"))
    mirror = str(options.get("mirror") or host_debian_mirror())
    packages = [str(p) for p in options.get("debian_packages", ["python3"])]
    platforms = [str(p) for p in options.get("platforms", [f"manylinux2014_{machine}"])]
    tree = root / "rootfs"
    total = len(spec.steps) + 4
    progress(f"[1/{total}] debootstrap --foreign {suite} {arch} with {', '.join(packages)} "
             "(downloads the Debian packages)")
    _run(["debootstrap", "--foreign", f"--arch={arch}", "--variant=minbase",
          f"--include={','.join(packages)}", suite, str(tree), mirror],
         "debootstrap", progress)
    debs = sorted((tree / "var/cache/apt/archives").glob("*.deb"))
    progress(f"[2/{total}] unpacking {len(debs)} Debian packages")
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(tree)], f"unpacking {deb.name}", progress)
    shutil.copy2(emulator, tree / "usr/bin" / Path(emulator).name)
    site = tree / SITE
    site.mkdir(parents=True, exist_ok=True)
    python_version = _rootfs_python_version(tree)
    abi = "cp" + python_version.replace(".", "")
    platform_args = [arg for p in platforms for arg in ("--platform", p)]
    for number, step in enumerate(spec.steps, start=3):
        progress(f"[{number}/{total}] pip install ({machine}) {' '.join(step.packages)}")
        pip_install(_host_pip_python(), step, progress,
                    extra=["--target", str(site), "--only-binary=:all:", *platform_args,
                           "--python-version", python_version, "--implementation", "cp",
                           "--abi", abi])
    progress(f"[{total - 1}/{total}] writing the emulated cpuinfo")
    template = CPUINFO_TEMPLATES[str(options.get("cpuinfo", "kunpeng-920"))]
    cpuinfo = "\n".join(template.format(index=i) for i in range(int(options.get("cpus", 4))))
    (root / "cpuinfo").write_text(cpuinfo + "\n")
    progress(f"[{total}/{total}] recording installed versions")
    found = {d.metadata["Name"]: d.version for d in metadata.distributions(path=[str(site)])}
    found["python3 (Debian)"] = _debian_version(tree, "python3")
    return {"interpreter": "/usr/bin/python3", "interpreter_host_path": str(tree / "usr/bin"
                                                                             / "python3"),
            "python": python_version, "machine": machine, "site_packages": "/" + SITE,
            "emulator": f"{Path(emulator).name} {_emulator_version(emulator)}",
            "emulator_path": str(tree / "usr/bin" / Path(emulator).name),
            "debian": {"suite": suite, "arch": arch, "packages": len(debs)},
            "cpuinfo": str(options.get("cpuinfo", "kunpeng-920")),
            "packages": dict(sorted(found.items(), key=lambda i: i[0].lower()))}


def _host_pip_python() -> str:
    import sys

    return sys.executable


def _rootfs_python_version(tree: Path) -> str:
    from harness.environments.spec import EnvError

    found = sorted(p.name for p in (tree / "usr/bin").glob("python3.*")
                   if re.fullmatch(r"python3\.\d+", p.name))
    if not found:
        raise EnvError("the root filesystem has no python3 after unpacking; "
                       "add python3 to [rootfs].debian_packages")
    return found[-1].removeprefix("python")


def _debian_version(tree: Path, package: str) -> str:
    for deb in (tree / "var/cache/apt/archives").glob(f"{package}_*.deb"):
        return deb.name.split("_")[1].replace("%3a", ":")
    return "unknown"


def _emulator_version(emulator: str) -> str:
    out = subprocess.run([emulator, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"version (\S+)", out.stdout)
    return found.group(1) if found else "unknown"


def rootfs_launch(root: Path, manifest: Mapping[str, Any]) -> Launch:
    """``unshare -m`` + mounts + ``chroot`` + qemu: runs the foreign python3; the
    interpreter's own arguments follow the returned argv."""
    from harness.environments.spec import WORKER_PACKAGES, Launch, harness_path_dir

    tree = root / "rootfs"
    path_dir = harness_path_dir()
    binds = [(str(Path(p).resolve()), str(Path(p).resolve()))
             for p in (path_dir / name for name in WORKER_PACKAGES) if p.exists()]
    mounts = [
        f"mount -t proc proc {shlex.quote(str(tree / 'proc'))}",
        f"mount --bind {shlex.quote(str(root / 'cpuinfo'))} "
        f"{shlex.quote(str(tree / 'proc/cpuinfo'))}",
        f"mount --rbind /dev {shlex.quote(str(tree / 'dev'))}",
        f"mount --bind /tmp {shlex.quote(str(tree / 'tmp'))}",
    ]
    for source, target in binds:
        inside = shlex.quote(str(tree) + target)
        mounts.append(f"mkdir -p {inside} && mount --bind {shlex.quote(source)} {inside}")
    emulator = "/usr/bin/" + Path(manifest["emulator_path"]).name
    script = " && ".join([*mounts, f'exec chroot {shlex.quote(str(tree))} {emulator} '
                                   f'/usr/bin/python3 "$@"'])
    pythonpath = ":".join([manifest["site_packages"], *(str(Path(t).parent) for _, t in binds)])
    env = {"PYTHONPATH": pythonpath, "SHIPEI_ENVIRONMENT": str(manifest["name"]),
           "PYTHONNOUSERSITE": "1", "PIP_NO_INDEX": "1",
           "SHIPEI_EMULATED": manifest.get("emulator", "qemu")}
    return Launch(("unshare", "-m", "--", "sh", "-c", script, "shipei-rootfs"), env)

