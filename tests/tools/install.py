#!/usr/bin/env python3
"""The test suite's own tools, installed on first use into one directory (`target/tools`), so
that the README's `cargo test` needs nothing installed by hand but Rust, Postgres and Python 3.

    python3 tests/tools/install.py DIR python
        DIR/venv: the Python packages of tests/tools/requirements.txt, every version pinned
        (pyiceberg, DuckDB and its iceberg/httpfs/avro extensions, moto, boto3, pyspark).
    python3 tests/tools/install.py DIR spark
        DIR/venv, a Java runtime, and DIR/jars: Iceberg's Spark runtime, the relocated Jackson it
        lacks, hadoop-aws with the AWS SDK bundle, the PostgreSQL JDBC driver.
    python3 tests/tools/install.py DIR command NAME PACKAGE
        the Debian package PACKAGE, which brings the command NAME (promtool, chromium, ...).

Each step is quick once done (a stamp file says what was installed). One at a time: every step
holds an exclusive lock on DIR/.lock, so test threads and test binaries that start together wait
for the first one to finish. Debian packages are installed when this runs as root; otherwise it
exits 2 with one line naming what to install first. Everything comes from the package
registries (PyPI, Debian), nothing from elsewhere, and no Maven.
"""

import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(HERE, "requirements.txt")

# Where each jar comes from: a PyPI package (wheel or sdist) that ships it, at a pinned version.
ICEBERG_RUNTIME = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
ICEBERG_WHEEL = ("snowpark-connect-deps-iceberg", "1.0.3")
JACKSON = "iceberg-shaded-jackson-2.18.8.jar"
JACKSON_WHEEL = ("snowpark-connect-deps-2", "3.56.7")
HADOOP_AWS = ("hadoop-aws-3.3.1.jar", "aws-java-sdk-bundle-1.11.901.jar")
HADOOP_AWS_SDIST = ("sagemaker-pyspark", "1.4.5")
POSTGRES_JDBC = "/usr/share/java/postgresql.jar"
JARJAR = "/usr/share/java/jarjar.jar"
JARS_STAMP = "|".join([ICEBERG_RUNTIME, JACKSON, *HADOOP_AWS, "postgresql.jar", "1"])


def say(text):
    print(f"test tools: {text}", file=sys.stderr, flush=True)


def fail(text):
    print(f"test tools: {text}", file=sys.stderr, flush=True)
    sys.exit(2)


def run(*args, **kw):
    done = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if done.returncode != 0:
        fail(f"`{' '.join(map(str, args))}` failed ({done.returncode}):\n{done.stdout[-4000:]}")
    return done.stdout


def stamped(path, content):
    try:
        with open(path) as f:
            return f.read() == content
    except FileNotFoundError:
        return False


def write_stamp(path, content):
    with open(path + ".tmp", "w") as f:
        f.write(content)
    os.replace(path + ".tmp", path)


apt_updated = False


def debian(package, present):
    """Installs the Debian package unless `present()`; as root only, else one line and exit 2."""
    global apt_updated
    if present():
        return
    if os.geteuid() != 0:
        fail(f"the tests need the Debian package {package}: install it first "
             f"(sudo apt-get install -y {package}), then run the tests again")
    say(f"installing the Debian package {package} (first use)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not apt_updated:
        run("apt-get", "update", "-qq", env=env)
        apt_updated = True
    run("apt-get", "install", "-y", "-qq", "--no-install-recommends", package, env=env)
    if not present():
        fail(f"the Debian package {package} was installed but did not bring what the tests need")


def command(name, package):
    debian(package, lambda: shutil.which(name) is not None)


def python(tools):
    """DIR/venv with exactly the pinned requirements (made again when they change)."""
    venv = os.path.join(tools, "venv")
    with open(REQUIREMENTS, "rb") as f:
        wanted = hashlib.sha256(f.read() + sys.version.encode()).hexdigest()
    stamp = os.path.join(venv, ".requirements-sha256")
    if stamped(stamp, wanted):
        return
    say(f"installing the pinned Python packages into {venv} (first use: a minute or two)")
    shutil.rmtree(venv, ignore_errors=True)
    probe = subprocess.run([sys.executable, "-c", "import venv, ensurepip"], capture_output=True)
    if probe.returncode != 0:
        debian("python3-venv", lambda: False)
    run(sys.executable, "-m", "venv", venv)
    pip = os.path.join(venv, "bin", "pip")
    run(pip, "install", "-q", "--disable-pip-version-check", "-r", REQUIREMENTS)
    # DuckDB copies an extension into ~/.duckdb on its first INSTALL: done here, under the lock,
    # so that tests starting together never copy the same file at once.
    run(os.path.join(venv, "bin", "python"), "-c",
        "import duckdb, duckdb_extensions\n"
        "con = duckdb.connect()\n"
        "for e in ('avro', 'iceberg', 'httpfs'): duckdb_extensions.import_extension(e, con=con)")
    write_stamp(stamp, wanted)


def download(tools, package, version):
    """A package file from PyPI (no dependencies), into DIR/dl; its path."""
    dl = os.path.join(tools, "dl")
    os.makedirs(dl, exist_ok=True)
    pip = os.path.join(tools, "venv", "bin", "pip")
    run(pip, "download", "-q", "--disable-pip-version-check", "--no-deps", "-d", dl,
        f"{package}=={version}")
    stem = package.replace("-", "_")
    for name in sorted(os.listdir(dl)):
        if name.replace("-", "_").startswith(f"{stem}_{version}") and not name.endswith(".tmp"):
            return os.path.join(dl, name)
    fail(f"pip downloaded no file for {package}=={version} into {dl}")


def member(archive, suffix):
    """The bytes of the one member of a wheel (zip) or sdist (tar.gz) whose name ends so."""
    if archive.endswith(".whl") or archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n.endswith("/" + suffix)]
            if names:
                return z.read(names[0])
    else:
        with tarfile.open(archive) as t:
            names = [m for m in t.getmembers() if m.name.endswith("/" + suffix)]
            if names:
                return t.extractfile(names[0]).read()
    fail(f"{os.path.basename(archive)} has no {suffix}")


def write_atomic(path, data):
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def shaded_jackson(tools, work):
    """Jackson 2.18.8 relocated to org.apache.iceberg.shaded.com.fasterxml.jackson, as the runtime
    jar's classes name it but do not contain (NoClassDefFoundError ... JsonFactoryBuilder on the
    first table load otherwise), rebuilt with jarjar."""
    wheel = download(tools, *JACKSON_WHEEL)
    rules = os.path.join(work, "rules.txt")
    with open(rules, "w") as f:
        f.write("rule com.fasterxml.jackson.** org.apache.iceberg.shaded.com.fasterxml.jackson.@1\n")
    merged = io.BytesIO()
    seen = set()
    with zipfile.ZipFile(merged, "w", zipfile.ZIP_DEFLATED) as out:
        for part in ("core", "databind", "annotations"):
            plain = os.path.join(work, f"{part}.jar")
            relocated = os.path.join(work, f"{part}-relocated.jar")
            source = zipfile.ZipFile(io.BytesIO(member(wheel, f"jackson-{part}-2.18.8.jar")))
            with source, zipfile.ZipFile(plain, "w", zipfile.ZIP_DEFLATED) as z:
                for info in source.infolist():
                    # Multi-release copies clash once relocated.
                    if not info.filename.startswith("META-INF/versions/"):
                        z.writestr(info, source.read(info))
            run("java", "-jar", JARJAR, "process", rules, plain, relocated)
            with zipfile.ZipFile(relocated) as z:
                for info in z.infolist():
                    name = info.filename
                    if name.startswith("META-INF/") or name == "module-info.class" or name in seen:
                        continue
                    if name.endswith("/"):
                        continue
                    seen.add(name)
                    out.writestr(name, z.read(info))
    return merged.getvalue()


def spark(tools):
    """The venv (pyspark), a Java runtime and DIR/jars."""
    python(tools)
    command("java", "default-jre-headless")
    jars = os.path.join(tools, "jars")
    stamp = os.path.join(jars, ".stamp")
    if stamped(stamp, JARS_STAMP):
        return
    say(f"gathering Iceberg's Spark runtime and its jars into {jars} (first use)")
    debian("libpostgresql-jdbc-java", lambda: os.path.exists(POSTGRES_JDBC))
    debian("libjarjar-java", lambda: os.path.exists(JARJAR))
    os.makedirs(jars, exist_ok=True)
    work = os.path.join(tools, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    with open(POSTGRES_JDBC, "rb") as f:
        write_atomic(os.path.join(jars, "postgresql.jar"), f.read())
    runtime = member(download(tools, *ICEBERG_WHEEL), ICEBERG_RUNTIME)
    write_atomic(os.path.join(jars, ICEBERG_RUNTIME), runtime)
    write_atomic(os.path.join(jars, JACKSON), shaded_jackson(tools, work))
    sdist = download(tools, *HADOOP_AWS_SDIST)
    for jar in HADOOP_AWS:
        write_atomic(os.path.join(jars, jar), member(sdist, jar))
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(os.path.join(tools, "dl"), ignore_errors=True)  # 300 MB of packages, done with
    write_stamp(stamp, JARS_STAMP)


def main(argv):
    if len(argv) < 2 or argv[1] not in ("python", "spark", "command"):
        fail("usage: install.py DIR python | spark | command NAME PACKAGE")
    tools = os.path.abspath(argv[0])
    os.makedirs(tools, exist_ok=True)
    with open(os.path.join(tools, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if argv[1] == "python":
            python(tools)
        elif argv[1] == "spark":
            spark(tools)
        elif len(argv) == 4:
            command(argv[2], argv[3])
        else:
            fail("usage: install.py DIR command NAME PACKAGE")


if __name__ == "__main__":
    main(sys.argv[1:])
