"""The real Linux guest of the QEMU tests and of scripts/run: Debian's arm64
kernel as an uncompressed arm64 Image, plus a busybox initramfs whose
/init is tests/linux/init. Outputs (git-ignored), in cache/linux:

    Image                 the uncompressed arm64 kernel Image
    initramfs.cpio.gz     newc cpio, gzip
    kernel-version        e.g. "6.1.0-37-arm64 (linux-image-... 6.1.140-1)"
    modules/              the initramfs's kernel modules (NAME.ko,
                          uncompressed), their load order and a stamp

Idempotent and cheap when the outputs are up to date (no apt calls then).
Progress goes to stderr; the last stdout line is the cache directory.

    linux_guest.py [--update]   (scripts/build-linux-guest)
      --update  re-resolve the current kernel (apt) even if an Image exists,
                and rebuild everything that changed.
"""
import glob
import gzip
import lzma
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import debpkg  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, "cache", "linux")
INIT = os.path.join(ROOT, "tests", "linux", "init")
SELF = [os.path.abspath(__file__), os.path.join(ROOT, "scripts", "build-linux-guest")]
WHO = "build-linux-guest"

# Kernel modules for the initramfs, which /init insmods in this order
# before its marker line: a virtio-mmio or virtio-pci block device with
# an ext4 file system (the PL031 RTC and the generic PCI host bridge are
# built in). What each needs ("depends=" in its
# .modinfo) is added before it automatically; soft dependencies are not,
# so they are listed: crc32c_generic is "crypto-crc32c", which ext4 and
# jbd2 soft-depend on for metadata checksums (without modprobe, the
# kernel cannot fetch it).
KMODS = ["crc32c_generic", "ext4", "virtio_mmio", "virtio_pci", "virtio_blk"]

# busybox applets linked into /bin (those busybox lacks are skipped), and
# those /init cannot do without.
APPLETS = """sh ash cttyhack setsid mount umount cat grep egrep nproc echo printf
    poweroff reboot halt ls uname sleep dmesg mkdir rmdir hostname free ps
    kill head tail awk sed tr cut wc sort uniq env id true false test [ [[
    sync dd hexdump od xxd md5sum sha256sum cp mv rm ln chmod stat readlink
    date find xargs vi less more df du top mdev ip ifconfig devmem
    insmod lsmod rmmod watch time seq yes clear reset stty tty""".split()
NEEDED = """sh cttyhack setsid mount umount cat grep nproc echo dmesg hostname mkdir
    poweroff insmod sync dd""".split()


def log(msg):
    debpkg.log(WHO, msg)


def die(msg):
    raise debpkg.Error(msg)


def fresh(out, *inputs):
    """`out` exists and is newer than every existing input."""
    if not os.path.exists(out):
        return False
    t = os.path.getmtime(out)
    return all(not os.path.exists(i) or os.path.getmtime(i) <= t for i in inputs)


def is_image(path):
    """An arm64 Image: magic "ARM\\x64" at offset 56."""
    try:
        with open(path, "rb") as f:
            f.seek(56)
            return f.read(4) == b"ARM\x64"
    except OSError:
        return False


# ---- the kernel ----------------------------------------------------------------

def extract_image(deb):
    """Image, config and kernel-version from the kernel package `deb`."""
    log(f"extracting {deb}")
    names = debpkg.members(deb)
    vmlinuz = next((n for n in names if n.startswith("./boot/vmlinuz-")), None)
    if vmlinuz is None:
        die(f"{deb} has no /boot/vmlinuz-*")
    kver = vmlinuz.split("/vmlinuz-", 1)[1]
    data = debpkg.read_member(deb, vmlinuz)
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data[56:60] != b"ARM\x64":
        die(f"{vmlinuz} is not an arm64 Image (no ARM\\x64 magic at 56)")
    debpkg.write("Image", data)
    config = next((n for n in names if n.startswith("./boot/config-")), None)
    if config:
        debpkg.write("config", debpkg.read_member(deb, config))
    pkg, ver = debpkg.control(deb, "Package", "Version")
    with open("kernel-version", "w") as f:
        f.write(f"{kver} ({pkg} {ver})\n")
    # Drop superseded kernel .debs.
    for d in glob.glob("linux-image-*_arm64.deb"):
        if d != os.path.basename(deb):
            os.remove(d)
    log(f"Image: {kver}, {len(data)} bytes")


def kernel(apt, update):
    """The Image, up to date; the kernel package if this run resolved it."""
    debs = glob.glob("linux-image-*_arm64.deb")
    need = update or not is_image("Image") or not fresh("Image", *debs)
    if not need:
        log(f"Image is up to date ({read('kernel-version') or '?'})")
        return None
    deb = apt.kernel(CACHE)
    if fresh("Image", deb) and is_image("Image"):
        log(f"Image is up to date ({os.path.basename(deb)})")
    else:
        extract_image(deb)
    return deb


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def image_deb():
    """The kernel package that made the Image, from kernel-version (e.g.
    "6.1.0-57-arm64 (linux-image-6.1.0-57-arm64 6.1.192-3)")."""
    m = re.fullmatch(r"(\S+) \((\S+) (\S+)\)", read("kernel-version"))
    return f"{m.group(2)}_{m.group(3).replace(':', '%3a')}_arm64.deb" if m else None


# ---- kernel modules ------------------------------------------------------------

def modinfo(ko, field):
    """The values of .modinfo field `field` of module file `ko` (a field
    may repeat)."""
    with open(ko, "rb") as f:
        data = f.read()
    pre = field.encode() + b"="
    return [w[len(pre):].decode(errors="replace") for w in re.split(b"[\0\n]", data)
            if w.startswith(pre)]


def decompress(src, dst):
    if src.endswith(".ko"):
        shutil.copyfile(src, dst)
    elif src.endswith(".xz"):
        with lzma.open(src) as i, open(dst, "wb") as o:
            shutil.copyfileobj(i, o)
    elif src.endswith(".gz"):
        with gzip.open(src) as i, open(dst, "wb") as o:
            shutil.copyfileobj(i, o)
    else:
        if not shutil.which("zstd"):
            die(f"{src} is compressed; install zstd (Debian package zstd)")
        with open(dst, "wb") as o:
            subprocess.run(["zstd", "-dc", src], stdout=o, check=True)


def extract_modules(deb):
    """KMODS and everything they depend on, out of the kernel package `deb`,
    into modules/ (NAME.ko, decompressed), with modules/order (each module
    after what it depends on) and modules/stamp (kernel version and
    KMODS, for the freshness check)."""
    log(f"extracting modules ({' '.join(KMODS)} and their dependencies) from {deb}")
    kos = [n for n in debpkg.members(deb)
           if re.match(r"^\./lib/modules/[^/]+/.*\.ko(\.(xz|zst|gz))?$", n)]
    if not kos:
        die(f"{deb} ships no kernel modules")
    shutil.rmtree("modules.tmp", ignore_errors=True)
    shutil.rmtree("kmod-root", ignore_errors=True)
    os.makedirs("modules.tmp")
    path, deps, pending = {}, {}, list(KMODS)
    kver = None
    while pending:
        for m in pending:
            # File names may spell the module's "_" as "-".
            pat = re.compile("/" + m.replace("_", "[-_]") + r"\.ko(\.(xz|zst|gz))?$")
            p = next((k for k in kos if pat.search(k)), None)
            if p is None:
                die(f"{deb} has no module {m}")
            path[m] = p
        want = {path[m] for m in pending}
        debpkg.extract(deb, "kmod-root", keep=lambda n: n in want)
        new = []
        for m in pending:
            ko = f"modules.tmp/{m}.ko"
            decompress(os.path.join("kmod-root", path[m]), ko)
            kver = path[m].split("/")[3]
            vm = (modinfo(ko, "vermagic") or [""])[0]
            if not vm.startswith(kver + " "):
                die(f"{m}: vermagic '{vm}' is not for {kver}")
            deps[m] = [d.replace("-", "_") for d in ",".join(modinfo(ko, "depends")).split(",") if d]
            new += [d for d in deps[m] if d not in path and d not in new]
        pending = new
    order = load_order(deps)
    report_softdeps(order)
    with open("modules.tmp/order", "w") as f:
        f.write("".join(m + "\n" for m in order))
    with open("modules.tmp/stamp", "w") as f:
        f.write(f"{kver} {' '.join(KMODS)}\n")
    shutil.rmtree("modules", ignore_errors=True)
    shutil.rmtree("kmod-root", ignore_errors=True)
    os.rename("modules.tmp", "modules")
    size = sum(os.path.getsize(f"modules/{m}.ko") for m in order)
    log(f"modules: {' '.join(order)} ({size} bytes)")


def load_order(deps):
    """Depth first from KMODS, in their order: dependencies first."""
    order, state = [], {}

    def visit(m):
        if state.get(m) == "done":
            return
        if state.get(m) == "busy":
            die(f"modules depend on each other in a cycle at {m}")
        state[m] = "busy"
        for d in deps[m]:
            visit(d)
        state[m] = "done"
        order.append(m)

    for m in KMODS:
        visit(m)
    return order


def report_softdeps(order):
    """Soft dependencies ("softdep=pre: NAME..."; NAME may be an alias) are
    only reported: satisfied when an earlier module has that name or
    alias."""
    known = set()
    for m in order:
        ko = f"modules.tmp/{m}.ko"
        for line in modinfo(ko, "softdep"):
            pre = False
            for w in line.split():
                if w in ("pre:", "post:"):
                    pre = w == "pre:"
                elif pre and w.replace("-", "_") not in known:
                    log(f"(module {m} soft-depends on {w}, which is not loaded before it)")
        known.add(m)
        known.update(a.replace("-", "_") for a in modinfo(ko, "alias"))


def modules_fresh():
    """Made from this Image's package (after it), for KMODS."""
    if not all(os.path.exists(p) for p in ("kernel-version", "modules/stamp", "modules/order")):
        return False
    kv = read("kernel-version").split(" ")[0]
    if read("modules/stamp") != f"{kv} {' '.join(KMODS)}" or not fresh("modules/stamp", "Image"):
        return False
    return all(os.path.getsize(f"modules/{m}.ko") > 0 if os.path.exists(f"modules/{m}.ko") else False
               for m in read("modules/order").split())


def modules(apt, kdeb):
    if modules_fresh():
        log(f"modules are up to date ({' '.join(read('modules/order').split())})")
        return
    # The package the Image came from (kept in the cache): no apt then.
    if kdeb is None:
        kdeb = image_deb()
        if not kdeb or not os.path.exists(kdeb) or os.path.getsize(kdeb) == 0:
            # Gone: fetch the current kernel, and take its Image too.
            kdeb = apt.kernel(CACHE)
            if os.path.basename(kdeb) != image_deb():
                extract_image(kdeb)
    extract_modules(kdeb)


# ---- busybox and the initramfs ---------------------------------------------

BUSYBOX = "busybox-root/bin/busybox"


def busybox(apt, update):
    debs = glob.glob("busybox-static_*_arm64.deb")
    need = update or not os.access(BUSYBOX, os.X_OK) or not fresh(BUSYBOX, *debs)
    if need:
        deb = apt.download("busybox-static:arm64", CACHE)
        if fresh(BUSYBOX, deb):
            log(f"busybox is up to date ({os.path.basename(deb)})")
        else:
            log(f"extracting {deb}")
            shutil.rmtree("busybox-root", ignore_errors=True)
            subprocess.run(["dpkg-deb", "-x", deb, "busybox-root"], check=True)
            if not os.access(BUSYBOX, os.X_OK):
                die(f"{deb} has no /bin/busybox")
            os.utime(BUSYBOX)
            for d in glob.glob("busybox-static_*_arm64.deb"):
                if d != os.path.basename(deb):
                    os.remove(d)
    kind = subprocess.run(["file", "-b", BUSYBOX], capture_output=True, text=True).stdout
    if "ARM aarch64" not in kind or "static" not in kind:
        die(f"{BUSYBOX} is not a static arm64 binary: {kind.strip()}")


def initramfs():
    if fresh("initramfs.cpio.gz", INIT, BUSYBOX, *SELF, "modules/order"):
        log("initramfs is up to date")
        return
    log("building initramfs.cpio.gz")
    # busybox's applet names are a NUL-separated list inside the binary.
    with open(BUSYBOX, "rb") as f:
        have = {w.decode() for w in re.split(b"\0", f.read()) if re.fullmatch(rb"[a-z0-9_.\[-]+", w)}
    for a in NEEDED:
        if a not in have:
            die(f"busybox lacks the '{a}' applet")
    r = "initramfs-root"
    shutil.rmtree(r, ignore_errors=True)
    for d in ("bin", "sbin", "proc", "sys", "dev", "tmp", "etc", "root", "mnt", "lib/modules"):
        os.makedirs(os.path.join(r, d))
    shutil.copy2(BUSYBOX, f"{r}/bin/busybox")
    for a in APPLETS:
        if a in have:
            os.symlink("busybox", f"{r}/bin/{a}")
        else:
            log(f"(busybox has no '{a}' applet; skipped)")
    shutil.copyfile(INIT, f"{r}/init")
    os.chmod(f"{r}/init", 0o755)
    # Modules: /lib/modules/NAME.ko; /etc/modules lists them in load order.
    for m in read("modules/order").split():
        shutil.copyfile(f"modules/{m}.ko", f"{r}/lib/modules/{m}.ko")
    shutil.copyfile("modules/order", f"{r}/etc/modules")
    os.chmod(f"{r}/tmp", 0o1777)
    with open(f"{r}/etc/passwd", "w") as f:
        f.write("root:x:0:0:root:/:/bin/sh\n")
    with open(f"{r}/etc/group", "w") as f:
        f.write("root:x:0:\n")
    files = sorted(os.path.relpath(os.path.join(d, n), r)
                   for d, dirs, names in os.walk(r) for n in dirs + names)
    listing = "".join(f"./{p}\n" for p in files).encode()
    cpio = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "--owner=0:0"], cwd=r,
                          input=listing, capture_output=True, check=True).stdout
    debpkg.write("initramfs.cpio.gz", gzip.compress(cpio, compresslevel=9, mtime=0))
    log(f"initramfs: {os.path.getsize('initramfs.cpio.gz')} bytes")


def host_tools():
    """cpio, file and dpkg-deb, installed when missing."""
    tools = {"cpio": "cpio", "file": "file", "dpkg-deb": "dpkg"}
    missing = [p for c, p in tools.items() if not shutil.which(c)]
    if missing:
        debpkg.Apt(WHO).install(missing)


def main(argv):
    if argv not in ([], ["--update"]):
        print(f"usage: {sys.argv[0]} [--update]", file=sys.stderr)
        return 2
    update = argv == ["--update"]
    host_tools()
    os.makedirs(CACHE, exist_ok=True)
    os.chdir(CACHE)
    apt = debpkg.Apt(WHO)
    kdeb = kernel(apt, update)
    modules(apt, kdeb)
    busybox(apt, update)
    initramfs()
    print(CACHE)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (debpkg.Error, subprocess.CalledProcessError) as e:
        log(f"error: {e}")
        sys.exit(1)
