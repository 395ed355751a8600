"""A fresh virtual environment holding a wheel and exactly the dependencies it declares, made of
hard links to the files this interpreter's environment (.venv) already installed.

Why not `pip install` the wheel's dependencies: that copies TensorFlow and the rest, 2.5 GB, on
every test run (TensorFlow alone is 1.9 GB). The question the packaging tests ask is whether
the wheel's declared requirements are enough, and this answers it as well: the environment
gets the distributions the wheel's `Requires-Dist` close over (markers evaluated, extras
followed) and nothing else, `pip check` then proves that set complete, and a module the wheel
forgot to declare is missing here as it would be after `pip install`. Hard links take no room
and, unlike symbolic links, leave every file where a real install puts it.
"""
import email.parser
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def wheel_requirements(wheel):
    """The `Requires-Dist` lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [name for name in archive.namelist()
                       if name.endswith(".dist-info/METADATA")]
        message = email.parser.Parser().parsestr(archive.read(metadata).decode("utf-8"))
    return message.get_all("Requires-Dist") or []


def dependency_closure(requirements):
    """{canonical name: installed Distribution} of everything `requirements` need, resolved
    against this interpreter's environment.

    Raises:
        RuntimeError: a requirement is not installed here, or not in a version it accepts.
    """
    closure = {}
    pending = [(Requirement(text), "") for text in requirements]
    seen = set()
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, tuple(sorted(requirement.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            raise RuntimeError(f"{requirement} is not installed in {sys.prefix}: run "
                               "`make venv` again.") from None
        if not requirement.specifier.contains(distribution.version, prereleases=True):
            raise RuntimeError(f"{requirement} is not met by the installed "
                               f"{distribution.version} in {sys.prefix}: run `make venv` again.")
        closure[name] = distribution
        for extra_name in [""] + sorted(requirement.extras):
            pending.extend((Requirement(text), extra_name)
                           for text in distribution.requires or [])
    return closure


def link_distribution(distribution, site_packages):
    """Hard-links the files a distribution installed into `site_packages` (those inside it;
    scripts and headers are not needed here). Returns the number of files."""
    count = 0
    for record in distribution.files or []:
        if record.parts[0] == "..":
            continue
        source = Path(distribution.locate_file(record))
        if not source.is_file():  # a RECORD line for a file pip did not keep (e.g. a .pyc)
            continue
        target = site_packages / record
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # shared between distributions, e.g. a namespace __init__
            continue
        try:
            os.link(source, target)
        except OSError:  # another filesystem
            shutil.copy2(source, target)
        count += 1
    return count


def create(root, wheel):
    """A virtual environment at `root` with `wheel` installed (its console scripts included)
    and its dependencies linked; returns its bin folder.

    Raises:
        RuntimeError: `pip check` finds a requirement the linked set does not meet.
    """
    venv.create(root, with_pip=True)
    bin_folder = root / "bin"
    site_packages = Path(sysconfig.get_path(
        "purelib", vars={"base": str(root), "platbase": str(root)}))
    for distribution in dependency_closure(wheel_requirements(wheel)).values():
        link_distribution(distribution, site_packages)
    subprocess.run([str(bin_folder / "pip"), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, text=True)
    check = subprocess.run([str(bin_folder / "pip"), "check"], capture_output=True, text=True)
    if check.returncode:
        raise RuntimeError(f"the linked environment misses a requirement:\n{check.stdout}")
    return bin_folder
