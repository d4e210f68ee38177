"""The simulated driver's Spark: one application per cluster start, shared by every context.

A standalone script run by the driver's Python (started by path, like ``repl.py``). It starts
pyspark's JVM gateway and the SparkSession, then publishes the gateway's port and auth secret,
with the application id, in a 0600 JSON file that the REPL contexts read to wrap the same
SparkContext and SparkSession. It lives until stdin closes or it is signalled (the cluster's
termination kills it with the rest of the driver); the JVM exits with it (pyspark's gateway
exits when its parent's pipe closes).

Usage: ``python sparkhost.py GATEWAY_FILE``
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback


def _publish(path: str, info: dict) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    path = argv[1]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        from pyspark.sql import SparkSession

        spark = (
            SparkSession.builder.master("local[*]")
            .appName("Databricks Shell")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .getOrCreate()
        )
        sc = spark.sparkContext
        gateway = sc._gateway
        params = getattr(gateway, "java_parameters", None) or gateway.gateway_parameters
        _publish(
            path,
            {
                "port": params.port,
                "secret": params.auth_token,
                "applicationId": sc.applicationId,
                "sparkVersion": sc.version,
                "pid": os.getpid(),
            },
        )
    except BaseException as exc:
        traceback.print_exc()
        _publish(path, {"error": f"{type(exc).__name__}: {exc}", "pid": os.getpid()})
        return 1
    sys.stdin.read()  # until the simulator closes the pipe (or kills this process)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
