"""Runs on the driver as ``<driver python> -c <this file>``: starts ipykernel and stays its parent.

Why a parent on the driver: the kernel must outlive nothing and leave nothing. This process reads
the request (the connection info with the HMAC key) as the first line of stdin, so the key is
never on a command line; writes it to a 0600 file in a private run folder (likewise the cluster's py4j gateway port
and secret, when the provisioner handed them over, for ``dbcontext()``); starts ``-m
ipykernel_launcher`` on 127.0.0.1 with port 0 for every channel (the kernel binds and reports its
own ports, so no port can be taken between choice and bind); reports the kernel's PID and ports;
then waits for the kernel's exit, removes the run folder and reports the exit status. Its stdout
is JSON lines read by ``remotekernel.py``.

The watchdog: stdin stays open after the request, and the provisioner writes a line on it every
few seconds. Those lines, and touches of the run folder's ``lease`` file (by ``hold``, which a
provisioner that re-attached from another process runs), are the signs of life of the kernel's
controlling connection. Without one for ``grace`` seconds (the server was killed, the laptop
slept, the network went for good) the kernel is stopped, the run folder removed and this process
exits. A start whose controlling connection closes before the kernel is ready is given up at
once: nobody is left to use that kernel.

``<python> -c <this file> hold <run folder>`` is ``hold``: it touches the lease file for every
line on its stdin until stdin closes.

Shipped as package data and kept compatible with the oldest driver Pythons (3.8): standard
library only, no annotations evaluated at run time.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
# The same rule as vocabulary.SECRET_NAME: such variables of the driver never reach the kernel.
SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|_KEY$", re.I)


def say(**kw):
    try:
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()
    except Exception:
        pass


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def kernel_env(req, run):
    env = dict((k, v) for k, v in os.environ.items() if not SECRET.search(k))
    env.update(req.get("env") or {})
    helper = req.get("helper")
    if helper:
        import importlib.util

        # The kernel-side helper (dbcontext) for drivers that lack this package.
        if importlib.util.find_spec("databrickslabs_jupyterlab") is None:
            pkg = os.path.join(run, "lib", "databrickslabs_jupyterlab")
            os.makedirs(pkg)
            for name, text in helper.items():
                if os.sep in name or name.startswith("."):
                    continue
                with open(os.path.join(pkg, name), "w") as f:
                    f.write(text)
            paths = [os.path.join(run, "lib")] + [p for p in [env.get("PYTHONPATH")] if p]
            env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


class Control:
    """Signs of life of the controlling connection: lines on stdin, touches of the lease."""

    def __init__(self, grace, lease):
        self.grace = grace
        self.lease = lease
        self.last = time.time()
        self.closed = False
        reader = threading.Thread(target=self._read)
        reader.daemon = True
        reader.start()

    def _read(self):
        while True:
            try:
                line = sys.stdin.buffer.readline()
            except Exception:
                line = b""
            if not line:
                self.closed = True
                return
            self.last = time.time()

    def idle(self):
        """Seconds since the last sign of life."""
        last = self.last
        try:
            last = max(last, os.stat(self.lease).st_mtime)
        except OSError:
            pass
        return time.time() - last

    def expired(self):
        return self.grace > 0 and self.idle() > self.grace


def stop_group(child, grace=5.0):
    """TERM to the kernel's process group, KILL after ``grace`` seconds; reaps the kernel."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(child.pid, sig)
        except OSError:
            pass
        try:
            return child.wait(wait)
        except subprocess.TimeoutExpired:
            pass
    return child.wait()


def hold(run):
    """Keep a kernel controlled from another SSH session: touch its lease per stdin line."""
    if not os.path.basename(run).startswith("dbjl-kernel-") or not os.path.isdir(run):
        sys.exit(f"not a kernel run folder: {run!r}")
    lease = os.path.join(run, "lease")
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            return
        try:
            with open(lease, "a"):
                pass
            os.utime(lease, None)
        except OSError:
            return  # the run folder is gone: so is the kernel


def tail(path):
    try:
        with open(path, "rb") as f:
            return f.read()[-2000:].decode("utf-8", "replace")
    except OSError:
        return ""


def main():
    if sys.argv[1:2] == ["hold"] and len(sys.argv) == 3:
        hold(sys.argv[2])
        return
    req = json.loads(sys.stdin.buffer.readline())
    run = tempfile.mkdtemp(prefix="dbjl-kernel-")
    os.chmod(run, 0o700)
    conn_file = os.path.join(run, "kernel.json")
    conn = dict(req["conn"], ip="127.0.0.1", transport="tcp")
    for name in NAMES:
        conn[name] = 0
    write_private(conn_file, json.dumps(conn))
    env = kernel_env(req, run)
    gateway = req.get("spark_gateway")
    if isinstance(gateway, dict):
        # The cluster's py4j gateway (port and secret) or why there is none, for dbcontext():
        # a 0600 file in the 0700 run folder; the kernel's environment only names the file.
        gateway_file = os.path.join(run, "spark-gateway.json")
        write_private(gateway_file, json.dumps(gateway))
        env["DBJL_SPARK_GATEWAY_FILE"] = gateway_file
    log_path = os.path.join(run, "kernel.log")
    log = open(log_path, "ab")
    cwd = os.path.expanduser("~")
    if not os.path.isdir(cwd):
        cwd = "/"
    child = subprocess.Popen(
        [sys.executable, "-m", "ipykernel_launcher", "-f", conn_file],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        close_fds=True,
        start_new_session=True,
    )
    say(pid=child.pid, run_dir=run)
    control = Control(float(req.get("grace") or 0), os.path.join(run, "lease"))

    def finish(rc, text=None):
        shutil.rmtree(run, ignore_errors=True)
        say(exit=rc, log=text)
        sys.exit(0)

    deadline = time.time() + float(req.get("ready_timeout") or 60)
    delay = 0.005
    while True:
        rc = child.poll()
        if rc is not None:
            finish(rc, tail(log_path))
        if control.closed:
            # The provisioner gave up the start (or went): nobody is left to use this kernel.
            finish(stop_group(child, 1.0), "the controlling connection closed during the start")
        try:
            with open(conn_file) as f:
                info = json.load(f)
            if all(info.get(n) for n in NAMES):
                say(ports=dict((n, info[n]) for n in NAMES))
                break
        except (OSError, ValueError):
            pass
        if time.time() > deadline:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except OSError:
                pass
            child.wait()
            finish(-9, "the kernel did not open its ports in time\n" + tail(log_path))
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)
    # The SSH session may go (link lost): stay to reap the kernel and remove the run folder,
    # and stop the kernel once its controlling connection has been gone for the grace.
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    except Exception:
        pass
    exited = threading.Event()
    waiter = threading.Thread(target=lambda: (child.wait(), exited.set()))
    waiter.daemon = True
    waiter.start()
    tick = min(max(control.grace / 10.0, 0.1), 5.0)
    while True:
        if exited.wait(tick):  # the kernel's exit is reported at once
            finish(child.wait())
        if control.expired():
            reason = f"no controlling connection for {control.grace:g} s: kernel stopped"
            finish(stop_group(child), reason)


if __name__ == "__main__":
    main()
