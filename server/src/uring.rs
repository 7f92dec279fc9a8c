//! The start-up check that io_uring works here, with a message that names
//! the cause and the fix when it does not.

/// Tries to create a tiny io_uring.
pub fn check() -> Result<(), String> {
    // struct io_uring_params is 120 bytes; zero means "defaults".
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup writes at most sizeof(io_uring_params) bytes into
    // `params`, which is that large.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: `fd` is the ring we just created and own.
        unsafe { libc::close(fd as libc::c_int) };
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    let sysctl = sysctl.as_deref().map(str::trim);
    Err(match (err.raw_os_error(), sysctl) {
        (Some(libc::ENOSYS), _) => "io_uring is not available: this kernel has no io_uring support \
             (ringway needs Linux 5.11 or newer built with CONFIG_IO_URING); run on a newer kernel"
            .to_owned(),
        (Some(libc::EPERM), Some("2")) => "io_uring is disabled on this machine (sysctl kernel.io_uring_disabled = 2); \
             enable it with `sysctl -w kernel.io_uring_disabled=0`"
            .to_owned(),
        (Some(libc::EPERM), Some("1")) => "io_uring is restricted to the group in kernel.io_uring_group \
             (sysctl kernel.io_uring_disabled = 1); add this user to that group or set the sysctl to 0"
            .to_owned(),
        (Some(libc::EPERM), _) => "io_uring_setup was refused (EPERM), most likely by a container's seccomp profile; \
             allow the io_uring_setup, io_uring_enter and io_uring_register system calls \
             (for Docker: --security-opt seccomp=<a profile that allows them>)"
            .to_owned(),
        _ => format!("io_uring_setup failed: {err}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn io_uring_works_on_the_test_machine() {
        super::check().unwrap();
    }
}
