#!/usr/bin/env python3
"""Debian bookworm's Xen 4.17 hypervisor booting the same two-Linux-domU
"dom0less" system as bench.py's xen_style, under QEMU virt with icount:
a reference point for dtvisor's figures.

  xen.py [--bootargs ARGS] [--verbose] [--limit SECONDS]
      boots Xen (-kernel) with the Xen-style system DTB, waits for both
      domUs' "dtvisor-linux: up" markers, prints the console lines of
      interest; exit status 1 if they do not appear.
  xen.py fetch [--update]
      downloads and caches the hypervisor only; prints its path.

fetch() takes xen-hypervisor-4.17-arm64 from deb.debian.org: the newest
4.17 version in bookworm, bookworm-updates or bookworm-security (main,
binary-arm64), through scripts/debpkg.py (every Debian download of the
project), which checks the chain end to end: InRelease's signature (gpgv
with Debian's archive keyring, when both are installed), the Packages.xz
index's SHA256 from it, the .deb's SHA256 from the index.
The .deb's boot/xen-4.17-arm64 is a raw arm64 Image (with a PE header,
the same bytes as the .efi next to it), so QEMU's -kernel boots it as it
is; a gzip one would be decompressed.

Python's standard library and python3-debian (scripts/setup), plus gpgv
if present.
"""
import argparse
import gzip
import hashlib
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import LOGDIR, ROOT, Qemu  # noqa: E402
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import debpkg  # noqa: E402
import system as sysdtb  # noqa: E402

CACHE = os.path.join(ROOT, "cache", "xen")
LINUX = os.environ.get("DTVISOR_LINUX") or os.path.join(ROOT, "cache/linux")
PACKAGE = "xen-hypervisor-4.17-arm64"
SERIES = "4.17"
MEMBER = "boot/xen-4.17-arm64"
IMAGE = os.path.join(CACHE, "xen-4.17-arm64")  # what -kernel boots
# (archive root, suite): where bookworm's packages are.
SUITES = [("https://deb.debian.org/debian", "bookworm"),
          ("https://deb.debian.org/debian", "bookworm-updates"),
          ("https://deb.debian.org/debian-security", "bookworm-security")]

# Xen's own command line. No dtuart=: Xen then takes /chosen/stdout-path
# (QEMU's PL011). bootscrub=0: do not scrub free RAM at boot (slow under
# TCG). console_timestamps=boot: "[seconds.microseconds]" since boot on
# each line.
BOOTARGS = "console=dtuart bootscrub=0 console_timestamps=boot"
VERBOSE = "loglvl=all guest_loglvl=all"
LIMIT = 540  # host seconds for one QEMU run
DOMAINS = ("domU0", "domU1")


FetchError = debpkg.Error


def log(msg):
    print(f"xen.py: {msg}", file=sys.stderr)


# ---- fetch ---------------------------------------------------------------

def bootable(image):
    """What QEMU's -kernel boots: an arm64 Image ("ARM\\x64" at 0x38),
    gunzipped if it came compressed."""
    if image[:2] == b"\x1f\x8b":
        image = gzip.decompress(image)
    if image[0x38:0x3c] != b"ARM\x64":
        raise FetchError(f"{MEMBER} is not an arm64 Image (magic {image[0x38:0x3c]!r})")
    return image


def fetch(update=False):
    """Path of Debian bookworm's Xen 4.17 arm64 hypervisor, as an arm64
    Image for QEMU's -kernel, in cache/xen (next to its .deb and a .info
    file naming version and source). Downloads it unless cached (or when
    `update`), through scripts/debpkg.py (signature and hashes checked).
    Safe with concurrent callers: files are renamed into place, the Image
    last."""
    if os.path.isfile(IMAGE) and not update:
        return IMAGE
    os.makedirs(CACHE, exist_ok=True)
    try:
        ver, base, suite, p = debpkg.archive_newest(SUITES, PACKAGE, SERIES, "xen.py")
        deb = debpkg.archive_fetch(base, p, CACHE, "xen.py")
        image = bootable(debpkg.read_member(deb, MEMBER))
    except FetchError as e:
        raise FetchError(f"xen.py fetch: {e}") from None
    debpkg.write(IMAGE + ".info", (
        f"package {PACKAGE} {ver} ({suite})\nurl {base}/{p['Filename']}\n"
        f"deb-sha256 {p['SHA256']}\nimage-sha256 {hashlib.sha256(image).hexdigest()}\n"
        f"image-bytes {len(image)}\n").encode())
    debpkg.write(IMAGE, image)
    return IMAGE


def installed_version():
    """The cached hypervisor's package and version ("package ... (suite)")."""
    try:
        for line in open(IMAGE + ".info"):
            if line.startswith("package "):
                return line.split(" ", 1)[1].strip()
    except OSError:
        pass
    return PACKAGE


# ---- the system ------------------------------------------------------------

def dts_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def bootargs_dts(bootargs):
    """DTS text that sets /chosen xen,xen-bootargs (appended after a
    fragment, it overrides the fragment's own)."""
    return "\n/ {\n    chosen {\n        xen,xen-bootargs = " + dts_string(bootargs) + ";\n    };\n};\n"


def system(work, linux=LINUX, bootargs=BOOTARGS, smp=1):
    """bench.py's Xen-style system DTB (two domUs, 1 vCPU and 256 MiB each,
    vpl011, own kernel and ramdisk: system.xen_style_fragment) for QEMU
    -smp `smp` (1: Xen 4.17 hangs under icount with more CPUs), with
    /chosen xen,xen-bootargs = `bootargs` (a later definition in the DTS
    overrides the fragment's). Returns (dtb path, QEMU loader args)."""
    os.makedirs(work, exist_ok=True)
    frag = sysdtb.xen_style_fragment(work, linux)
    dtb = os.path.join(work, f"xen-style-smp{smp}.dtb")
    loaders = sysdtb.system_dtb(frag, dtb, env={"LINUX": linux}, smp=smp, extra_dts=bootargs_dts(bootargs))
    return dtb, loaders


# ---- the boot ----------------------------------------------------------------

WORK = os.path.join(ROOT, "cache/qemu/xen")
# A console line as Xen prints it with console_timestamps=boot:
# "(XEN) [    2.398414] DOM2: dtvisor-linux: up ..." (guest lines, from the
# domains' vpl011, whose backend is in Xen without a dom0) or
# "(XEN) [    0.002695] *** LOADING DOMU ..." (Xen's own). Timestamps are
# seconds since Xen's timer initialisation (NOW()), in virtual time here.
LINE = re.compile(r"^\(XEN\) (?:\[\s*(\d+\.\d+)\] )?(.*)$")
GUEST = re.compile(r"^(?:DOM(\d+): |\(d(\d+)\) )(.*)$")
INTEREST = re.compile(r"Xen version|dom0less|LOADING DOMU|Loading |Allocating mappings|BANK\[|Loglevel"
                      r"|Serial input|Freed .* init memory|Panic|FATAL|[Ee]rror")


def linux_dir():
    """cache/linux (DTVISOR_LINUX overrides), built if missing."""
    if all(os.path.isfile(os.path.join(LINUX, f)) for f in ("Image", "initramfs.cpio.gz")):
        return LINUX
    log(f"{LINUX}: no Image + initramfs.cpio.gz, running scripts/build-linux-guest")
    p = subprocess.run([os.path.join(ROOT, "scripts/build-linux-guest")], stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit("xen.py: scripts/build-linux-guest failed")
    return p.stdout.strip().splitlines()[-1]


def console_lines(text):
    """(timestamp or None, domain id or None, text) per console line."""
    out = []
    for raw in text.splitlines():
        m = LINE.match(raw.rstrip("\r"))
        if not m:
            continue
        g = GUEST.match(m.group(2))
        if g:
            out.append((m.group(1), int(g.group(1) or g.group(2)), g.group(3)))
        else:
            out.append((m.group(1), None, m.group(2)))
    return out


def boot(bootargs=BOOTARGS, limit=LIMIT, name="xen-dom0less", log_dir=LOGDIR):
    """Boots Xen with the Xen-style system until both domUs' markers;
    returns (console text, host seconds from QEMU start to the second
    marker). Raises harness.Failure (with the console tail) otherwise."""
    xen = fetch()
    linux = linux_dir()
    dtb, loaders = system(WORK, linux, bootargs)
    start = time.monotonic()
    with Qemu(name, ["-kernel", xen, "-dtb", dtb] + loaders, limit=limit, smp=1, mem="2G", gic=3,
              cpu="cortex-a57", icount=True, log_dir=log_dir) as q:
        q.expect_all([rf"dtvisor-linux: up domain={d}\b[^\n]*\n" for d in DOMAINS], limit - 10)
        took = time.monotonic() - start
        return q.text(), took


def report(text):
    """The console lines of interest, as printed lines."""
    lines = console_lines(text)

    def fmt(ts, dom, body):
        return f"(XEN) [{ts:>12}] " + (f"DOM{dom}: " if dom else "") + body if ts else \
            "(XEN) " + (f"DOM{dom}: " if dom else "") + body

    first_guest = next((i for i, (_, d, _) in enumerate(lines) if d is not None), len(lines))
    last_xen = max((i for i in range(first_guest) if lines[i][1] is None), default=None)
    out, seen = [], set()
    for i, (ts, dom, body) in enumerate(lines):
        keep = False
        if dom is None and (INTEREST.search(body) or i == last_xen):
            keep = True
        if dom is not None and (dom not in seen or "Run /init" in body or "dtvisor-linux: up" in body):
            keep = True
            seen.add(dom)
        if keep:
            note = "   <- last Xen line before the first guest output" if i == last_xen else ""
            out.append(fmt(ts, dom, body) + note)
    return out


def markers(text):
    """domain name -> (Xen timestamp, Xen domain id) of its marker."""
    out = {}
    for ts, dom, body in console_lines(text):
        m = re.match(r"dtvisor-linux: up domain=(\w+)", body) if dom is not None else None
        if m and m.group(1) not in out:
            out[m.group(1)] = (ts, dom)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", nargs="?", choices=["boot", "fetch"], default="boot")
    ap.add_argument("--bootargs", default=BOOTARGS, help=f"Xen's command line (default: {BOOTARGS!r})")
    ap.add_argument("--verbose", action="store_true", help=f"append {VERBOSE!r} to it")
    ap.add_argument("--update", action="store_true", help="re-resolve the newest 4.17 package")
    ap.add_argument("--limit", type=int, default=LIMIT, help="host seconds for the QEMU run")
    a = ap.parse_args()
    try:
        xen = fetch(a.update)
    except FetchError as e:
        raise SystemExit(str(e))
    if a.cmd == "fetch":
        print(xen)
        return
    info_path = xen + ".info"
    info = dict(l.split(" ", 1) for l in open(info_path).read().splitlines()) if os.path.exists(info_path) else {}
    with open(xen, "rb") as f:
        hdr = f.read(64)
    bootargs = a.bootargs + (" " + VERBOSE if a.verbose else "")
    print(f"xen: {info.get('package', PACKAGE + ' (version unknown: no ' + info_path + ')')}")
    print(f"xen: {xen}: {os.path.getsize(xen)} bytes, arm64 Image (text_offset"
          f" {int.from_bytes(hdr[8:16], 'little'):#x}, image_size {int.from_bytes(hdr[16:24], 'little')})")
    print("xen: QEMU virt,virtualization=on,gic-version=3, cortex-a57, -smp 1, 2 GiB,"
          " -icount shift=0,align=off,sleep=off")
    print(f"xen: xen,xen-bootargs = \"{bootargs}\"")
    from harness import Failure
    try:
        text, took = boot(bootargs, a.limit)
    except Failure as e:
        print(f"xen: FAILED: {e}")
        sys.exit(1)
    print("xen: console lines of interest ([seconds since Xen's timer init], icount virtual time):")
    for line in report(text):
        print("  " + line)
    ms = markers(text)
    for d in DOMAINS:
        ts, dom = ms[d]
        print(f"xen: {d} is DOM{dom}: marker at Xen time {ts} s")
    print(f"xen: both markers after {took:.1f} s host wall time from QEMU start"
          f" (log: {os.path.join(LOGDIR, 'xen-dom0less.log')})")


if __name__ == "__main__":
    main()
