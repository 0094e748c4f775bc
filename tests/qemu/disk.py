"""ext4 disk images for guests' virtio-blk devices, made and read on the host
without root privileges or mounting: mke2fs -d fills a new file system from
a directory, debugfs reads a file back out (both from e2fsprogs, which
scripts/setup installs; Debian keeps them in /sbin)."""
import os
import struct
import shutil
import subprocess
import tempfile

_SBIN = ("/sbin", "/usr/sbin")


def _tool(name):
    """The path of e2fsprogs' `name`: on PATH, else in /sbin or /usr/sbin."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))
    if not found:
        raise FileNotFoundError(f"{name} not found on PATH or in {', '.join(_SBIN)}: install e2fsprogs (scripts/setup)")
    return found


def make_ext4(path, files, size_mib=16):
    """Creates (or overwrites) a raw ext4 image of `size_mib` MiB at `path`
    whose root directory holds `files`, a dict of file name -> bytes
    (names may contain "/" for subdirectories). Files get mode 0644 and
    directories 0755, owned by the caller's uid and gid (the root directory
    by root), which the guest's root can read and write anyway. Returns
    `path`."""
    with tempfile.TemporaryDirectory(prefix="dtvisor-ext4-") as src:
        for name, data in files.items():
            rel = name.lstrip("/")
            if not rel or ".." in rel.split("/"):
                raise ValueError(f"make_ext4 {path}: bad file name {name!r}")
            f = os.path.join(src, rel)
            os.makedirs(os.path.dirname(f), exist_ok=True)
            with open(f, "wb") as out:
                out.write(data)
            os.chmod(f, 0o644)
        for d, _, _ in os.walk(src):
            os.chmod(d, 0o755)
        # -d copies the tree in, with its modes and owners; -E root_owner:
        # root, not the caller, owns the root directory.
        cmd = [_tool("mke2fs"), "-q", "-F", "-t", "ext4", "-L", "dtvisor",
               "-E", "root_owner=0:0", "-d", src, path, f"{int(size_mib)}M"]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode:
            raise RuntimeError(f"make_ext4 {path}: {' '.join(cmd)} failed ({r.returncode}):\n"
                               + r.stdout.decode(errors="replace"))
    return path


def read_file(path, name):
    """The contents of file `name` (relative to the root directory) in the
    ext4 image at `path`, read with debugfs, without mounting. Raises
    FileNotFoundError naming the image and the file if either is missing."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such disk image (reading {name})")
    rel = "/" + name.lstrip("/")
    if '"' in rel or "\n" in rel:
        raise ValueError(f"read_file {path}: bad file name {name!r}")
    debugfs = _tool("debugfs")
    # debugfs's "cat" of a missing file prints an error on stderr and
    # nothing on stdout, yet exits 0: ask "stat" first.
    st = subprocess.run([debugfs, "-R", f'stat "{rel}"', path],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = st.stderr.decode(errors="replace")
    if st.returncode or b"Inode:" not in st.stdout:
        raise FileNotFoundError(f"{path}: no file {rel} in the ext4 image"
                                + (f" (debugfs: {err.strip().splitlines()[-1]})" if err.strip() else ""))
    if b"Type: regular" not in st.stdout:
        raise IsADirectoryError(f"{path}: {rel} in the ext4 image is not a regular file")
    r = subprocess.run([debugfs, "-R", f'cat "{rel}"', path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode:
        raise RuntimeError(f"{path}: debugfs cat {rel} failed ({r.returncode}): "
                           + r.stderr.decode(errors="replace").strip())
    return r.stdout


def make_fat(path, files, size_mib=None, under=""):
    """A disk image with an MBR and one bootable FAT32 (LBA) partition
    from 1 MiB holding `files` (host paths, copied under their base
    names, in directory `under` if given, e.g. "EFI/BOOT" for an ESP), as
    U-Boot's distro boot or UEFI finds them on `virtio 0:1` or an SD
    card. Needs mtools; no root. Sized for the files plus 48 MiB unless
    `size_mib` is given."""
    total = sum(os.path.getsize(f) for f in files)
    size = (size_mib << 20) if size_mib else max(64 << 20, ((total + (48 << 20)) >> 20) << 20)
    if os.path.exists(path):
        os.unlink(path)
    with open(path, "wb") as f:
        f.truncate(size)
    sectors = size // 512 - 2048
    entry = struct.pack("<B3sB3sII", 0x80, b"\0\0\0", 0x0C, b"\0\0\0", 2048, sectors)
    with open(path, "r+b") as f:
        f.seek(446)
        f.write(entry)
        f.seek(510)
        f.write(b"\x55\xaa")
    part = f"{path}@@1M"
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    dirs, d = [], ""
    for comp in [c for c in under.split("/") if c]:
        d += "/" + comp
        dirs.append(["mmd", "-i", part, "::" + d])
    copies = [["mcopy", "-i", part, f, f"::{d}/" + os.path.basename(f)] for f in files]
    for cmd in [["mformat", "-i", part, "-F", "::"]] + dirs + copies:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
