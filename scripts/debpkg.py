"""Every Debian package dtvisor's scripts and tests download, in one place.

Two sources:

* The host's apt, with arm64 as a foreign architecture: Debian's arm64
  kernel (linux-image-arm64's current package) and busybox-static for the
  Linux guest (linux_guest.py), and the kernel's board DTBs for the host
  discovery tests (`debpkg.py board-dtbs DIR`). apt checks signatures and
  hashes; `apt-get download` fetches, so nothing is installed.
* Debian's archive directly (deb.debian.org), for a package of a fixed
  release whatever the host runs: bookworm's Xen 4.17 for the benchmarks
  (tests/qemu/xen.py). InRelease is signature-checked with gpgv and
  Debian's keyring when both are installed, Packages.xz by the SHA256 the
  Release file gives, the .deb by the SHA256 the index gives.

Parsing is python3-debian's (deb822 paragraphs, Debian version order,
.deb members); scripts/setup installs it. Progress goes to stderr.

    debpkg.py board-dtbs DIR   every board DTB of the kernel package, into DIR
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request

from debian import deb822
from debian.debfile import DebFile
from debian.debian_support import Version

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Wait for a concurrent apt/dpkg (another build) rather than fail.
APT_LOCK = ["-o", "DPkg::Lock::Timeout=600"]


class Error(RuntimeError):
    pass


def log(who, msg):
    print(f"{who}: {msg}", file=sys.stderr)


def _sudo():
    return [] if os.geteuid() == 0 else ["sudo"]


def _run(cmd, **kw):
    """Runs `cmd`; its output (stdout) as text. Errors name the command."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise Error(f"{' '.join(cmd)}: {p.stderr.strip() or f'exit {p.returncode}'}")
    return p.stdout


# ---- the host's apt ----------------------------------------------------------

class Apt:
    """The host's apt for arm64 packages: adds the architecture and
    refreshes the indexes once, when first needed."""

    def __init__(self, who):
        self.who = who
        self.updated = False
        self.ready = False

    def _apt_get(self, *args):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(_sudo() + ["apt-get", *APT_LOCK, *args], check=True,
                       stdout=sys.stderr, env=env)

    def update(self):
        if not self.updated:
            log(self.who, "apt-get update")
            self._apt_get("update", "-q")
            self.updated = True

    def install(self, pkgs):
        """Installs the host packages `pkgs` (after refreshing the index)."""
        log(self.who, f"installing {' '.join(pkgs)}")
        self.update()
        self._apt_get("install", "-y", "-q", "--no-install-recommends", *pkgs)

    def arm64(self):
        """arm64 as a foreign architecture, with an index that has it."""
        if self.ready:
            return
        if "arm64" not in _run(["dpkg", "--print-foreign-architectures"]).split():
            log(self.who, "dpkg --add-architecture arm64")
            subprocess.run(_sudo() + ["dpkg", "--add-architecture", "arm64"], check=True)
            self.updated = False  # the indexes fetched so far lack arm64
            self.update()
        if not self.candidate("linux-image-arm64:arm64"):
            self.update()
            if not self.candidate("linux-image-arm64:arm64"):
                raise Error("no candidate for linux-image-arm64:arm64 after apt-get update")
        self.ready = True

    @staticmethod
    def candidate(pkg):
        """`pkg`'s candidate version, or None."""
        out = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True).stdout
        m = re.search(r"^\s*Candidate:\s*(\d\S*)", out, re.M)
        return m.group(1) if m else None

    def depends(self, pkg):
        """The packages `pkg` depends on (its candidate's Depends)."""
        out = _run(["apt-cache", "depends", pkg])
        return re.findall(r"^\s*Depends:\s*(\S+)", out, re.M)

    def download(self, pkg, dest):
        """`pkg` (name:arm64)'s candidate .deb in `dest`, downloaded unless
        there; its path. A stale index (the mirror moved on) is
        refreshed once."""
        self.arm64()
        name = pkg.split(":")[0]
        ver = self.candidate(pkg)
        if not ver:
            raise Error(f"no candidate for {pkg}")
        deb = os.path.join(dest, f"{name}_{ver.replace(':', '%3a')}_arm64.deb")
        if os.path.getsize(deb) if os.path.exists(deb) else 0:
            return deb
        log(self.who, f"apt-get download {pkg} ({ver})")
        # Sandbox user root: the cache dir need not be readable by _apt.
        p = subprocess.run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
                            f"{pkg}={ver}"], cwd=dest, stdout=sys.stderr)
        if p.returncode != 0:
            if self.updated:
                raise Error(f"apt-get download {pkg} failed")
            self.update()
            return self.download(pkg, dest)
        if not os.path.exists(deb):
            raise Error(f"apt-get download {pkg} did not produce {deb}")
        return deb

    def kernel_package(self):
        """The name of linux-image-arm64's current kernel package (without
        -unsigned), e.g. linux-image-6.1.0-37-arm64."""
        self.arm64()
        deps = [d for d in self.depends("linux-image-arm64:arm64")
                if re.match(r"linux-image-\d", d)]
        if not deps:
            raise Error("cannot resolve linux-image-arm64:arm64's kernel package")
        return deps[0].split(":")[0].removesuffix("-unsigned")

    def kernel(self, dest):
        """The .deb of Debian's current arm64 kernel (linux-image-arm64's
        package) that ships /boot/vmlinuz-*: the signed package or its
        -unsigned twin, whichever has it."""
        dep = self.kernel_package()
        for cand in (dep, f"{dep}-unsigned"):
            if not self.candidate(f"{cand}:arm64"):
                continue
            deb = self.download(f"{cand}:arm64", dest)
            if any(n.startswith("./boot/vmlinuz-") for n in members(deb)):
                return deb
            log(self.who, f"{deb} has no /boot/vmlinuz-*")
        raise Error(f"no package of {dep} ships /boot/vmlinuz-*")


# ---- .deb files ----------------------------------------------------------------

def _data(deb):
    """The .deb's data tarball (python3-debian; dpkg-deb for what it cannot
    decompress)."""
    try:
        return DebFile(deb).data.tgz()
    except Exception:  # noqa: BLE001 (an unsupported compression)
        import io
        raw = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], capture_output=True, check=True).stdout
        return tarfile.open(fileobj=io.BytesIO(raw))


def members(deb):
    """The names in the .deb's data tarball ("./boot/vmlinuz-...")."""
    return _data(deb).getnames()


def read_member(deb, name):
    """One file of the .deb ("./boot/x" or "boot/x")."""
    tar = _data(deb)
    for n in (name, "./" + name.removeprefix("./"), name.removeprefix("./")):
        try:
            f = tar.extractfile(n)
        except KeyError:
            continue
        if f is not None:
            return f.read()
    raise Error(f"{deb} has no {name}")


def extract(deb, dest, keep=lambda name: True):
    """The .deb's files whose names `keep` accepts, under `dest` (paths
    kept, links and devices skipped)."""
    tar = _data(deb)
    chosen = [m for m in tar.getmembers()
              if (m.isfile() or m.isdir()) and keep(m.name)
              and not m.name.startswith("/") and ".." not in m.name.split("/")]
    tar.extractall(dest, members=chosen)


def control(deb, *fields):
    """Fields of the .deb's control file."""
    c = DebFile(deb).debcontrol()
    return [c.get(f, "") for f in fields]


# ---- Debian's archive, whatever the host runs -------------------------------

def _download(url, what):
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.read()
    except (urllib.error.URLError, OSError) as e:
        raise Error(f"downloading {what} from {url} failed: {e}") from None


def _release(base, suite, who):
    """The suite's Release, from InRelease, signature-checked with gpgv when
    gpgv and the keyring are installed."""
    url = f"{base}/dists/{suite}/InRelease"
    signed = _download(url, f"{suite} InRelease")
    if os.path.exists(KEYRING) and shutil.which("gpgv"):
        p = subprocess.run(["gpgv", "--keyring", KEYRING, "--output", "-", "-"], input=signed,
                           capture_output=True)
        if p.returncode != 0:
            raise Error(f"{url}: bad signature:\n{p.stderr.decode(errors='replace')}")
        return deb822.Release(p.stdout)
    log(who, f"gpgv or {KEYRING} missing: {url} not signature-checked")
    return deb822.Release(signed)  # deb822 skips the PGP armour


def archive_packages(base, suite, who, component="main", arch="arm64"):
    """The suite's Packages paragraphs for `component`/`arch`, the index's
    SHA256 checked against the Release file."""
    name = f"{component}/binary-{arch}/Packages.xz"
    rel = _release(base, suite, who)
    sums = {s["name"]: (s["sha256"], int(s["size"])) for s in rel.get("SHA256", [])}
    if name not in sums:
        raise Error(f"{base} {suite}: Release lists no {name}")
    data = _download(f"{base}/dists/{suite}/{name}", f"{suite} {name}")
    if (hashlib.sha256(data).hexdigest(), len(data)) != sums[name]:
        raise Error(f"{base}/dists/{suite}/{name}: SHA256 or size differs from its Release file")
    import lzma
    return list(deb822.Packages.iter_paragraphs(lzma.decompress(data).decode(), use_apt_pkg=False))


def archive_newest(suites, package, series, who):
    """(version, archive root, suite, paragraph) of the newest `package`
    whose version starts with `series` in any of `suites` ((root, suite)
    pairs)."""
    found = []
    for base, suite in suites:
        for p in archive_packages(base, suite, who):
            if p.get("Package") == package and p.get("Version", "").startswith(series + "."):
                found.append((p["Version"], base, suite, p))
    if not found:
        raise Error(f"no {package} {series}.* in " + ", ".join(s for _, s in suites))
    return max(found, key=lambda c: Version(c[0]))


def archive_fetch(base, paragraph, dest, who):
    """The .deb a Packages paragraph names, in `dest` unless cached with the
    right SHA256; its path."""
    path = os.path.join(dest, os.path.basename(paragraph["Filename"]))
    want = paragraph["SHA256"]
    have = open(path, "rb").read() if os.path.isfile(path) else b""
    if hashlib.sha256(have).hexdigest() == want:
        return path
    url = f"{base}/{paragraph['Filename']}"
    log(who, f"downloading {paragraph['Package']} {paragraph['Version']}")
    data = _download(url, paragraph["Package"])
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise Error(f"{url}: SHA256 {got}, the index says {want}")
    write(path, data)
    return path


def write(path, data):
    """Writes `data` to `path` atomically (a rename), so concurrent callers
    see the old file or the new one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ---- board DTBs --------------------------------------------------------------

def board_dtbs(out):
    """Every board DTB of Debian's arm64 kernel package under `out`
    (vendor/board.dtb), marked complete by `out/.complete`."""
    who = "fetch-test-dtbs"
    if os.path.exists(os.path.join(out, ".complete")):
        return
    log(who, "fetching Debian's arm64 kernel package for its board DTBs")
    apt = Apt(who)
    pkg = apt.kernel_package()
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    os.chmod(tmp, 0o755)
    deb = apt.download(f"{pkg}:arm64", tmp)
    if not any(n.endswith(".dtb") for n in members(deb)):
        # Newer Debian splits the signed image; the -unsigned one has the DTBs.
        deb = apt.download(f"{pkg}-unsigned:arm64", tmp)
    extract(deb, tmp, keep=lambda n: n.endswith(".dtb"))
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    n = 0
    for root, _, files in os.walk(tmp):
        for f in files:
            if not f.endswith(".dtb"):
                continue
            rel = _board_path(os.path.relpath(os.path.join(root, f), tmp))
            os.makedirs(os.path.join(out, os.path.dirname(rel)), exist_ok=True)
            shutil.copyfile(os.path.join(root, f), os.path.join(out, rel))
            n += 1
    shutil.rmtree(tmp, ignore_errors=True)
    log(who, f"{n} board DTBs from {pkg}")
    open(os.path.join(out, ".complete"), "w").close()


def _board_path(rel):
    """A DTB's path in the package as vendor/board.dtb: after
    usr/lib/linux-image-VERSION/ (Debian) or boot/dtbs/VERSION/."""
    parts = rel.split(os.sep)
    for i, p in enumerate(parts):
        if p.startswith("linux-image-"):
            return os.path.join(*parts[i + 1:])
        if p == "dtbs":
            return os.path.join(*parts[i + 2:])
    return os.path.join(*parts[-2:])


def main(argv):
    if len(argv) == 2 and argv[0] == "board-dtbs":
        board_dtbs(argv[1])
        return 0
    print(__doc__.rstrip().rsplit("\n\n", 1)[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Error as e:
        log("debpkg", f"error: {e}")
        sys.exit(1)
