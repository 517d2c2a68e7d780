"""A full disk can be freed through the API: with the data directory on a
small tmpfs filled to the last byte (models until RESOURCE_EXHAUSTED, then
a filler file), DeleteModel and DeleteDataset succeed, and creating works
again afterwards. Disk full is RESOURCE_EXHAUSTED, never INTERNAL.

Needs to mount a tmpfs (root, or CAP_SYS_ADMIN); skipped (77) otherwise."""
import errno
import os
import subprocess
import sys
import tempfile
import unittest

import fxtest
from fxtest import C, Daemon, FluxionError, mlp_spec, np

TMPFS_SIZE = "8m"
MAX_MODELS = 64          # bounds the filling loop (each model ~256 KiB)


def big_spec():
    # 128*256 + 256*128 weights: about 256 KiB of safetensors per version
    return mlp_spec(n_in=128, hidden=256, n_out=128)


def mount_tmpfs():
    """A mounted tmpfs directory, or None (with the reason) when mounting is
    not permitted here."""
    mnt = tempfile.mkdtemp(prefix="fx-diskfull-")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + TMPFS_SIZE, "tmpfs", mnt],
                       capture_output=True, text=True)
    if p.returncode != 0:
        os.rmdir(mnt)
        return None, (p.stderr or p.stdout).strip() or "mount failed"
    return mnt, None


def fill(path):
    """Writes path until the file system is full; returns the bytes written."""
    n = 0
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                n += f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
        # the last pages, in smaller pieces
        for size in (4096, 512, 1):
            while True:
                try:
                    n += f.write(b"\0" * size)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    return n


MNT = None


class DiskFullTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.mnt = MNT

    def test_delete_and_create_on_full_disk(self):
        d = Daemon(data_dir=os.path.join(self.mnt, "data"), name="diskfull").start()
        try:
            c = d.client()
            x = np.arange(64 * 1024, dtype=np.float32).reshape(-1, 16)  # 256 KiB
            c.upload_dataset("d", {"x": x})
            made = []
            full = None
            for i in range(MAX_MODELS):
                try:
                    c.create_model("m%d" % i, big_spec(), seed=i, no_load=True)
                    made.append("m%d" % i)
                except FluxionError as e:
                    full = e
                    break
            self.assertIsNotNone(full, "the tmpfs never filled")
            self.assertEqual(full.code, C.RESOURCE_EXHAUSTED, full.message)
            self.assertGreater(len(made), 2)
            fill(os.path.join(self.mnt, "filler"))
            st = os.statvfs(self.mnt)
            self.assertLess(st.f_bavail * st.f_frsize, 4096, "the disk is not full")
            # still full: creating is refused, as RESOURCE_EXHAUSTED
            with self.assertRaises(FluxionError) as cm:
                c.create_model("more", mlp_spec(), seed=1, no_load=True)
            self.assertEqual(cm.exception.code, C.RESOURCE_EXHAUSTED, cm.exception.message)
            # deletes work on the full disk (the store gives up its reserve
            # so that SQLite can write the delete to its WAL)
            c.delete_model(made[0])
            c.delete_dataset("d")
            with open(d.log_path) as f:
                self.assertIn("gave up the reserve", f.read())
            names = [m.name for m in c.list_models()]
            self.assertNotIn(made[0], names)
            self.assertEqual([ds.name for ds in c.list_datasets()], [])
            # the space they held is usable again
            c.create_model("again", mlp_spec(), seed=2, no_load=True)
            self.assertIn("again", [m.name for m in c.list_models()])
            # and everything survives a restart
            d.restart()
            c = d.client()
            self.assertEqual(sorted(m.name for m in c.list_models()),
                             sorted(made[1:] + ["again"]))
            c.delete_model(made[1])
        finally:
            d.stop()


if __name__ == "__main__":
    MNT, why = mount_tmpfs()
    if MNT is None:
        print("skipped: cannot mount a tmpfs for a small data directory (%s)" % why)
        sys.exit(fxtest.SKIP)
    try:
        fxtest.main()
    finally:
        subprocess.run(["umount", MNT], check=False)
        os.rmdir(MNT)
