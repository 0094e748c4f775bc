"""Fixtures shared by the QEMU tests (tests/qemu/test_*.py).

scripts/test builds what the tests boot (the image, the test guest,
dtvisor-plan) before it runs pytest; a test that needs one that is missing
fails saying so. Every file a test writes is under a directory of its own,
named after the test, so parallel workers (pytest-xdist) never share one:
  cache/qemu-tests/TEST/     fragments, DTBs, disk images
  target/qemu-logs/TEST/     one console log per QEMU run
Shared: QEMU's own DTB dumps in cache/qemu, which system.py creates
atomically, and the image and guest that scripts/run (in
test_terminal's scripts/run) rebuilds: unchanged, and renamed into place.
"""
import os
import shutil

import pytest

import harness


def _built(path, how):
    if not os.path.isfile(path):
        pytest.fail(f"{path} missing: {how}", pytrace=False)
    return path


def _build_hint(cmd):
    return f"{cmd} builds it (scripts/test does, before the QEMU tests)"


@pytest.fixture(scope="session")
def image():
    """The dtvisor image (DTVISOR_IMAGE overrides)."""
    return _built(os.environ.get("DTVISOR_IMAGE") or os.path.join(harness.ROOT, "target/aarch64/release/dtvisor.bin"),
                  _build_hint("scripts/build"))


@pytest.fixture(scope="session")
def guest():
    """The test guest's raw image (DTVISOR_GUEST overrides)."""
    return _built(os.environ.get("DTVISOR_GUEST") or os.path.join(harness.ROOT, "target/guest/dtvisor-test-guest.bin"),
                  _build_hint("scripts/build-guest"))


@pytest.fixture(scope="session")
def plan_tool():
    """The host tool dtvisor-plan."""
    return _built(os.path.join(harness.ROOT, "target/release/dtvisor-plan"),
                  _build_hint("cargo build --release -p dtvisor-plan"))


@pytest.fixture(scope="session")
def uboot_bin():
    """QEMU virt's U-Boot, from Debian's u-boot-qemu."""
    return _built(harness.UBOOT_BIN, "run scripts/setup (it installs u-boot-qemu)")


def _fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


@pytest.fixture(scope="session")
def linux():
    """cache/linux with Image and initramfs.cpio.gz (DTVISOR_LINUX overrides)."""
    d = os.environ.get("DTVISOR_LINUX") or os.path.join(harness.ROOT, "cache/linux")
    for f in ("Image", "initramfs.cpio.gz"):
        if not os.path.isfile(os.path.join(d, f)):
            pytest.fail(f"{d}/{f} missing: scripts/build-linux-guest makes it (scripts/test does)", pytrace=False)
    return d


@pytest.fixture
def work(request):
    """An empty directory for this test's files: cache/qemu-tests/TEST."""
    return _fresh(os.path.join(harness.CACHE, "qemu-tests", request.node.name))


# What the hypervisor says when a guest's trap allocated from the heap
# (which no trap path may do): checked after every QEMU test.
TRAP_ALLOCATION = b"heap allocations on guest trap paths"


@pytest.fixture
def log_dir(request):
    """This test's log directory: target/qemu-logs/TEST."""
    return _fresh(os.path.join(harness.LOGDIR, request.node.name))


@pytest.fixture
def qemu(log_dir):
    """harness.Qemu with this test's log directory: target/qemu-logs/TEST.
    After the test, no run may have reported a heap allocation on a guest
    trap path."""
    runs = []

    def start(name, args, **kw):
        q = harness.Qemu(name, args, log_dir=log_dir, **kw)
        runs.append(q)
        return q

    yield start
    for q in runs:
        if TRAP_ALLOCATION in q.buf:
            line = next(l for l in q.buf.splitlines() if TRAP_ALLOCATION in l)
            pytest.fail(f"{q.name}: {line.decode(errors='replace').strip()} ({q.log_path})", pytrace=False)


@pytest.fixture
def serial_port(log_dir):
    """harness.SerialPort in this test's log directory: a QEMU serial port
    the test reads and types into (closed after the test)."""
    ports = []

    def make(name):
        ports.append(harness.SerialPort(name, log_dir))
        return ports[-1]

    yield make
    for p in ports:
        p.close()
