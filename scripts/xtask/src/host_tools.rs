//! Host tools are picked only after they have been seen to run.
//!
//! A file that exists is not a tool that works: rustup's `rust-objcopy` can
//! be present while the LLVM library it links against is not, and a stale
//! PATH entry can name a deleted binary. Every tool xtask starts is chosen
//! with [`runs`] (`TOOL --version` exits 0) from a list of candidates, in
//! the environment it is then used in ([`tool_command`]): `cargo run` puts
//! its toolchain's library directory on `LD_LIBRARY_PATH`, where a broken
//! rustup `rust-objcopy` would find the library it lacks everywhere else.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A command for host tool `program`, without the `LD_LIBRARY_PATH` that
/// `cargo run` gave xtask: tools run as they would from a shell.
pub fn tool_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    command.env_remove("LD_LIBRARY_PATH");
    command
}

/// True when `program --version` starts and exits 0 (output discarded).
pub fn runs(program: impl AsRef<OsStr>) -> bool {
    version_output(program).is_some()
}

/// The stdout of `program --version` when it starts and exits 0.
pub fn version_output(program: impl AsRef<OsStr>) -> Option<String> {
    let output = tool_command(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The first of `candidates` that [`runs`].
pub fn first_that_runs<I>(candidates: I) -> Option<PathBuf>
where
    I: IntoIterator<Item = PathBuf>,
{
    candidates.into_iter().find(|candidate| runs(candidate))
}

/// Where `name` is on PATH (the first executable file of that name), as an
/// absolute path when PATH's entry is absolute.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| is_executable(candidate))
}

/// True when `path` is a file with an execute bit.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_that_cannot_run_is_not_chosen() {
        // A script that exists and is executable but fails, like a
        // rust-objcopy whose libLLVM is missing, is passed over.
        let dir = std::env::temp_dir().join(format!("xtask-tools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let broken = dir.join("broken-objcopy");
        std::fs::write(
            &broken,
            "#!/bin/sh\necho 'error while loading shared libraries' >&2\nexit 127\n",
        )
        .unwrap();
        let working = dir.join("working-objcopy");
        std::fs::write(&working, "#!/bin/sh\necho 'working 1.0'\n").unwrap();
        for file in [&broken, &working] {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let missing = dir.join("missing-objcopy");
        assert!(!runs(&broken));
        assert!(!runs(&missing));
        // A tool that runs only with cargo's LD_LIBRARY_PATH does not count.
        let needs_cargo = dir.join("needs-cargo-env");
        std::fs::write(&needs_cargo, "#!/bin/sh\n[ -n \"$LD_LIBRARY_PATH\" ]\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&needs_cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        assert!(!runs(&needs_cargo));
        // Negative control: with the variable it would have run.
        assert!(Command::new(&needs_cargo)
            .env("LD_LIBRARY_PATH", "/x")
            .status()
            .unwrap()
            .success());
        assert_eq!(version_output(&working).as_deref(), Some("working 1.0\n"));
        // Negative control: the working one is found behind the broken ones.
        assert_eq!(
            first_that_runs([missing.clone(), broken.clone(), working.clone()]),
            Some(working.clone())
        );
        assert_eq!(first_that_runs([missing, broken]), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finds_a_program_on_path() {
        assert!(find_in_path("sh").is_some_and(|path| path.ends_with("sh")));
        assert_eq!(find_in_path("no-such-tool-chroma-xtask"), None);
    }
}
