"""A local Python environment with the same library versions as a cluster's driver.

A notebook that should run both locally and on the cluster needs the same versions of the
libraries it imports. The driver's package list is filtered: by default everything except
generic infrastructure (the blacklist), or with ``-w`` only data-science libraries (the
whitelist). The result becomes a pinned requirements file installed into a new venv (default,
no conda needed) or, when asked and available, a conda environment with the driver's Python.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.version import InvalidVersion, Version

# Libraries a data scientist imports in a notebook and wants at the driver's version.
WHITELIST: tuple[str, ...] = (
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "statsmodels",
    "matplotlib",
    "seaborn",
    "plotly",
    "bokeh",
    "altair",
    "pyarrow",
    "polars",
    "xgboost",
    "lightgbm",
    "catboost",
    "torch",
    "torchvision",
    "torchaudio",
    "tensorflow",
    "keras",
    "transformers",
    "tokenizers",
    "datasets",
    "sentence-transformers",
    "mlflow",
    "mlflow-skinny",
    "hyperopt",
    "optuna",
    "shap",
    "nltk",
    "spacy",
    "gensim",
    "networkx",
    "sympy",
    "numba",
    "joblib",
    "koalas",
    "prophet",
    "pmdarima",
    "imbalanced-learn",
    "category-encoders",
    "opencv-python",
    "pillow",
    "beautifulsoup4",
)

# Generic infrastructure: packaging tools, Jupyter and IPython plumbing (the local side brings
# its own), HTTP and cloud SDK plumbing, and system packages of the driver's OS image.
# Shell-style patterns are allowed.
BLACKLIST: tuple[str, ...] = (
    "pip",
    "setuptools",
    "wheel",
    "distribute",
    "virtualenv",
    "distlib",
    "filelock",
    "platformdirs",
    "packaging",
    "ipykernel",
    "ipython",
    "ipython-genutils",
    "ipywidgets",
    "widgetsnbextension",
    "jupyterlab-widgets",
    "jupyter-*",
    "jupyterlab*",
    "notebook",
    "nbconvert",
    "nbformat",
    "nbclient",
    "traitlets",
    "tornado",
    "pyzmq",
    "comm",
    "debugpy",
    "prompt-toolkit",
    "pexpect",
    "ptyprocess",
    "databrickslabs-jupyterlab",
    "databricks-connect",
    "databricks-cli",
    "boto",
    "boto3",
    "botocore",
    "s3transfer",
    "azure-*",
    "google-*",
    "googleapis-common-protos",
    "grpcio*",
    "protobuf",
    "requests",
    "urllib3",
    "certifi",
    "idna",
    "chardet",
    "charset-normalizer",
    "six",
    "cryptography",
    "cffi",
    "pycparser",
    "pyopenssl",
    "asn1crypto",
    "pynacl",
    "bcrypt",
    "paramiko",
    "asyncssh",
    "psutil",
    "virtualenv-clone",
    "dbus-python",
    "pygobject",
    "python-apt",
    "distro",
    "distro-info",
    "ssh-import-id",
    "unattended-upgrades",
    "ufw",
    "command-not-found",
    "launchpadlib",
    "lazr.*",
    "wadllib",
    "keyring",
    "secretstorage",
    "jeepney",
)


#: A distribution name as PEP 508 defines it; anything else from a driver is dropped, since a name
#: such as ``-i http://host/simple`` would become a pip option in the local requirements file.
PEP508_NAME = re.compile(r"[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]")
# One line of the requirements file written here: a name, optionally pinned to a version.
_REQ_LINE = re.compile(rf"(?:{PEP508_NAME.pattern})(?:==[A-Za-z0-9.+!]+)?")


def is_name(name: object) -> bool:
    """True for a PEP 508 distribution name (``scikit_learn``, ``zope.interface``)."""
    return isinstance(name, str) and PEP508_NAME.fullmatch(name) is not None


def invalid_names(remote: Mapping[str, str]) -> list[str]:
    """The driver's package names that are not PEP 508 names (and are never mirrored)."""
    return [name for name in remote if not is_name(name)]


def normalize(name: str) -> str:
    """PEP 503 form, so ``Scikit_Learn`` and ``scikit-learn`` are the same package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _listed(name: str, patterns: Iterable[str]) -> bool:
    n = normalize(name)
    return any(
        fnmatch.fnmatchcase(n, normalize(p).replace("-*", "*")) or n == normalize(p)
        for p in patterns
    )


def select(remote: Mapping[str, str], *, use_whitelist: bool) -> dict[str, str]:
    """The driver's packages to mirror (normalized name -> version), sorted by name."""
    out: dict[str, str] = {}
    for name, version in remote.items():
        if not is_name(name):
            continue
        keep = _listed(name, WHITELIST) if use_whitelist else not _listed(name, BLACKLIST)
        if keep:
            out[normalize(name)] = version
    return dict(sorted(out.items()))


def pin(name: str, version: str) -> str:
    """``name==version``; a local label (``2.1.0+cu121``) is dropped because indexes lack it."""
    try:
        v = Version(version)
    except InvalidVersion:
        return name
    return f"{name}=={v.public}"


def requirements(selected: Mapping[str, str]) -> list[str]:
    return [pin(n, v) for n, v in selected.items()]


def local_packages() -> dict[str, str]:
    """Installed distributions of this interpreter (normalized name -> version)."""
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            out.setdefault(normalize(name), dist.version)
    return out


@dataclass(frozen=True)
class VersionRow:
    package: str
    local: str | None
    remote: str | None

    @property
    def same(self) -> bool:
        return self.local is not None and self.local == self.remote


def compare(local: Mapping[str, str], remote: Mapping[str, str], mode: str) -> list[VersionRow]:
    """Rows for ``-V all|diff|same``; ``diff`` includes packages present on one side only."""
    loc = {normalize(k): v for k, v in local.items()}
    rem = {normalize(k): v for k, v in remote.items() if is_name(k)}
    rows = [VersionRow(n, loc.get(n), rem.get(n)) for n in sorted(set(loc) | set(rem))]
    if mode == "same":
        return [r for r in rows if r.same]
    if mode == "diff":
        return [r for r in rows if not r.same]
    return rows


def conda_executable() -> str | None:
    exe = os.environ.get("CONDA_EXE")
    if exe and os.access(exe, os.X_OK):
        return exe
    return shutil.which("conda")


def env_name(cluster_name: str) -> str:
    """A file- and conda-safe name derived from the cluster name."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", cluster_name).strip("-.")
    return name or "databricks-mirror"


class MirrorError(Exception):
    """A step of the mirror failed; the message is one sentence."""


def _run(argv: list[str], on_line: Callable[[str], None], what: str) -> None:
    """Run a command, passing every output line on; raise MirrorError with the tail on failure."""
    tail: list[str] = []
    try:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
    except OSError as exc:
        raise MirrorError(f"Could not run {argv[0]}: {exc.strerror}.") from None
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                on_line(line)
                tail = (tail + [line])[-5:]
    if proc.returncode != 0:
        last = tail[-1] if tail else "no output"
        raise MirrorError(f"{what} failed (exit status {proc.returncode}): {last}")


def _req_text(reqs: Iterable[str], ipykernel: bool) -> str:
    lines = list(reqs)
    for line in lines:
        if _REQ_LINE.fullmatch(line) is None:
            raise MirrorError(f"{line[:80]!r} is not a package name with an optional version.")
    if ipykernel and not any(normalize(r.split("=")[0]) == "ipykernel" for r in lines):
        lines.append("ipykernel")
    return "".join(line + "\n" for line in lines)


def venv_python(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def create_venv(
    path: Path,
    reqs: list[str],
    *,
    python: str | None = None,
    pip_args: Iterable[str] = (),
    on_line: Callable[[str], None],
    ipykernel: bool = True,
) -> Path:
    """Create a venv at ``path`` and install ``reqs`` (plus ipykernel, to use it in Jupyter)."""
    if path.exists() and any(path.iterdir()):
        raise MirrorError(f"{path} already exists; choose another --env-path or remove it.")
    text = _req_text(reqs, ipykernel)
    base = python or sys.executable
    _run([base, "-m", "venv", str(path)], on_line, "Creating the venv")
    req_file = path / "requirements-mirror.txt"
    req_file.write_text(text, encoding="utf-8")
    _pip_install([str(venv_python(path))], req_file, pip_args, on_line)
    return path


def _pip_install(
    python: list[str], req_file: Path, pip_args: Iterable[str], on_line: Callable[[str], None]
) -> None:
    """``python -m pip install -r req_file`` (``python``: the words that run the target's
    Python), pip's lines prefixed for the person watching."""
    _run(
        [
            *python,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            *pip_args,
            "-r",
            str(req_file),
        ],
        lambda line: on_line(f"pip: {line}"),
        "Installing the mirrored packages",
    )


def create_conda(
    name: str,
    reqs: list[str],
    *,
    python_version: str,
    pip_args: Iterable[str] = (),
    on_line: Callable[[str], None],
    conda: str | None = None,
    ipykernel: bool = True,
) -> str:
    """Create conda env ``name`` with the driver's Python, then pip-install ``reqs`` into it."""
    exe = conda or conda_executable()
    if not exe:
        raise MirrorError("conda was asked for but is not installed; leave out --conda for a venv.")
    if not re.fullmatch(r"\d+\.\d+", python_version):
        raise MirrorError(f"The driver's Python version {python_version!r} is not usable.")
    text = _req_text(reqs, ipykernel)
    _run(
        [exe, "create", "--yes", "--name", name, f"python={python_version}", "pip"],
        on_line,
        "Creating the conda environment",
    )
    with tempfile.TemporaryDirectory(prefix="dbjl-mirror-") as tmp:
        req_file = Path(tmp) / "requirements.txt"
        req_file.write_text(text, encoding="utf-8")
        _pip_install([exe, "run", "--name", name, "python"], req_file, pip_args, on_line)
    return name
