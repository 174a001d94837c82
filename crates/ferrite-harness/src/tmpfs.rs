//! A small tmpfs for tests of a full disk: a real filesystem that runs out of space at a size
//! the test chooses, with no loop device or image file to clean up.

use std::path::Path;
use std::process::Command;

/// A tmpfs of a fixed size mounted on a temporary directory, unmounted when dropped (also when
/// the test panics). Mounting needs root (CAP_SYS_ADMIN): without it [`Tmpfs::mount`] panics
/// saying so, rather than letting a test pass without having tested anything.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on a new temporary directory.
    pub fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "this test fills a small tmpfs and needs root (CAP_SYS_ADMIN) to mount it; `mount -t tmpfs` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a server still holding files there cannot keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
