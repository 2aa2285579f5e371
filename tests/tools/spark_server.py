"""One Spark session (local[1]) for a whole test binary: the tests send it requests, one JSON
line each on stdin, and read one JSON line of answer on stdout. Started by tests/it/tools.rs with
the venv's python; ends when its stdin closes (the test binary exited).

    python spark_server.py JARS STATIC_CONF_JSON
        JARS: the jars, comma-separated (spark.jars); STATIC_CONF_JSON: settings that must be
        there when the session starts (spark.sql.extensions), as {"key": "value"}.

A request: {"spark": {key: value}, "sql": [statement, ...]}. Each request runs in a new session
of the one SparkContext (its own catalogs, so a test's catalog settings never reach another's):
`spark.hadoop.KEY` settings go to the Hadoop configuration as KEY, as Spark does at start-up
(Hadoop's cached file systems are closed first, so each request's S3 settings apply), the others
are set on the session. The answer: {"ok": true, "results": [rows of each statement]} with a row
a list of values (a timestamp as microseconds since the epoch), or {"ok": false, "error": text}.
"""

import calendar
import datetime
import decimal
import json
import os
import sys
import tempfile
import time


def value(v):
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return calendar.timegm(v.timetuple()) * 1_000_000 + v.microsecond
    if isinstance(v, (datetime.date, decimal.Decimal)):
        return str(v)
    if isinstance(v, dict):
        return {str(k): value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [value(x) for x in v]
    return v


def serve(base):
    jvm = base._jvm
    hadoop = base.sparkContext._jsc.hadoopConfiguration()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            jvm.org.apache.hadoop.fs.FileSystem.closeAll()
            session = base.newSession()
            for key, v in request.get("spark", {}).items():
                if key.startswith("spark.hadoop."):
                    hadoop.set(key[len("spark.hadoop."):], v)
                else:
                    session.conf.set(key, v)
            results = []
            for statement in request.get("sql", []):
                rows = session.sql(statement).collect()
                results.append([[value(x) for x in row] for row in rows])
            answer = {"ok": True, "results": results}
        except Exception as e:  # the test shows what Spark said
            answer = {"ok": False, "error": f"{type(e).__name__}: {e}"[:20000]}
        print(json.dumps(answer), flush=True)


def main():
    os.environ["TZ"] = "UTC"
    time.tzset()
    jars, static = sys.argv[1], json.loads(sys.argv[2])
    from pyspark.sql import SparkSession

    scratch = tempfile.mkdtemp(prefix="spark-tests-")
    builder = (
        SparkSession.builder.master("local[1]")
        .appName("receipt-exporter-tests")
        .config("spark.jars", jars)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", os.path.join(scratch, "warehouse"))
        .config("spark.driver.extraJavaOptions", f"-Duser.timezone=UTC -Djava.io.tmpdir={scratch}")
    )
    for key, v in static.items():
        builder = builder.config(key, v)
    base = builder.getOrCreate()
    base.sparkContext.setLogLevel("ERROR")
    print(json.dumps({"ok": True, "started": base.version}), flush=True)
    serve(base)
    base.stop()


if __name__ == "__main__":
    main()
