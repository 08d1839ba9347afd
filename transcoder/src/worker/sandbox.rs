//! The media child's sandbox, beyond the resource limits of [`super::child`]:
//!
//! - **The worker cannot be read by its child.** The worker marks itself non-dumpable
//!   ([`harden_worker`]): `/proc/<worker>/environ`, `mem` and ptrace then need
//!   `CAP_SYS_PTRACE` in the worker's user namespace, which the child never has.
//! - **No network, no privilege.** The child starts in a new user namespace with a new,
//!   empty network namespace ([`enter_namespaces`], between fork and exec): no interface
//!   but a downed loopback, and no capability over anything outside. Where user
//!   namespaces are off, root still gets the network namespace alone.
//! - **No new processes, sockets or programs.** The child itself, before it reads its
//!   request, installs a seccomp filter ([`lock_down`]) refusing `socket`, `execve`,
//!   `fork`/`clone` of processes (threads stay allowed: codecs need them), `ptrace` and
//!   namespace or mount changes. A fork-less process needs no `RLIMIT_NPROC`, which
//!   would count every process of the user anyway.
//! - Secrets never reach it: its environment is emptied before exec.
//!
//! [`check`] reports what holds on this machine; the worker runs it in a real child at
//! start ([`probe`]) and warns about every gap (`kura worker` logs it, the test suite
//! requires all of it).

use serde::{Deserialize, Serialize};

use crate::error::TranscodeError;

/// Whether the calling process (the worker) may be inspected by same-user processes;
/// after this, not even its own children can read its memory or environment.
pub fn harden_worker() -> std::io::Result<()> {
    nix::sys::prctl::set_dumpable(false).map_err(std::io::Error::from)
}

/// Moves the calling process into new user and network namespaces (network alone
/// where user namespaces are off and the caller is root); best effort: on a system
/// that has neither, the child runs without, and [`check`] says so.
///
/// Runs between fork and exec: only async-signal-safe calls.
pub fn enter_namespaces() {
    use nix::sched::{unshare, CloneFlags};
    if unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET).is_err() {
        let _ = unshare(CloneFlags::CLONE_NEWNET);
    }
}

/// Syscalls the child may never make, answered with `EPERM`.
const DENIED: &[i64] = &[
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_io_uring_setup,
];

/// Installs the child's seccomp filter on every thread of the calling process (the
/// `media-exec` child, right after it starts).
pub fn lock_down() -> Result<(), TranscodeError> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| TranscodeError::SandboxBackend(e))?;
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&n| (n, Vec::new())).collect();
    // clone: refused unless it makes a thread (CLONE_THREAD set).
    let process = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
        0,
    )?;
    rules.insert(libc::SYS_clone, vec![SeccompRule::new(vec![process])?]);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?;
    // clone3 passes its flags in memory, out of a filter's sight: answer ENOSYS, and
    // the C library falls back to clone, which the rule above sees.
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    for filter in [clone3, deny] {
        let program: seccompiler::BpfProgram = filter.try_into()?;
        seccompiler::apply_filter_all_threads(&program)?;
    }
    Ok(())
}

/// What the sandbox holds on this machine, as seen from inside a child.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    /// A TCP connection to the given address failed.
    pub network_blocked: bool,
    /// The parent's `/proc/<pid>/environ` could not be read.
    pub parent_unreadable: bool,
    /// Starting a program failed.
    pub spawn_blocked: bool,
    /// Opening a socket at all failed.
    pub sockets_blocked: bool,
}

impl SandboxReport {
    /// The protections that do not hold.
    pub fn gaps(&self) -> Vec<&'static str> {
        [
            (self.network_blocked, "the network is reachable"),
            (
                self.parent_unreadable,
                "the worker's environment is readable",
            ),
            (self.spawn_blocked, "programs can be started"),
            (self.sockets_blocked, "sockets can be opened"),
        ]
        .into_iter()
        .filter(|(held, _)| !held)
        .map(|(_, gap)| gap)
        .collect()
    }
}

/// Tries, from inside the child, what the sandbox should stop: reach `connect` over TCP,
/// read `parent`'s environment, start a program, open a socket.
pub fn check(connect: Option<std::net::SocketAddr>, parent: u32) -> SandboxReport {
    let probe = connect.unwrap_or(std::net::SocketAddr::from(([1, 1, 1, 1], 53)));
    let timeout = std::time::Duration::from_secs(2);
    SandboxReport {
        network_blocked: std::net::TcpStream::connect_timeout(&probe, timeout).is_err(),
        parent_unreadable: std::fs::read(format!("/proc/{parent}/environ")).is_err(),
        spawn_blocked: std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("exit 0")
            .status()
            .is_err(),
        sockets_blocked: std::net::UdpSocket::bind(("127.0.0.1", 0)).is_err(),
    }
}

/// Longest the sandbox check may take (it starts one child that tries a few calls).
const CHECK_WALL: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs [`check`] in a real media child of `program`, against a listener of this
/// process (so a connection that gets through is seen from both ends).
pub async fn probe(program: &std::path::Path) -> Result<SandboxReport, crate::model::Failure> {
    let internal = |m: String| crate::model::Failure {
        class: crate::model::FailureClass::Internal,
        message: m,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| internal(format!("sandbox check listener: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| internal(format!("sandbox check listener: {e}")))?;
    let request = super::child::MediaRequest::SandboxCheck {
        connect: Some(addr),
        parent: std::process::id(),
    };
    let limits = super::child::ChildLimits {
        wall: CHECK_WALL,
        memory_bytes: super::child::DEFAULT_MEMORY_BYTES,
        file_bytes: super::child::DEFAULT_FILE_BYTES,
        nice: 0,
    };
    let value = super::child::run(program, &request, limits, &|_| {}).await?;
    let mut report: SandboxReport =
        serde_json::from_value(value).map_err(|e| internal(format!("sandbox report: {e}")))?;
    // Accepted while the child ran: whatever the child believed, the network was open.
    let accepted = tokio::time::timeout(std::time::Duration::ZERO, listener.accept()).await;
    if matches!(accepted, Ok(Ok(_))) {
        report.network_blocked = false;
    }
    Ok(report)
}
