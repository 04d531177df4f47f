//! Telling the service manager (systemd, `Type=notify` units) when a
//! daemon is ready and when it is stopping. Without a service manager
//! (`NOTIFY_SOCKET` unset: the supervisor of `provisioning/bastion-service`,
//! tests) these do nothing.

/// The daemon serves now (sockets bound, recovery done).
pub fn ready() {
    notify(sd_notify::NotifyState::Ready, "ready");
}

/// The daemon has begun to shut down.
pub fn stopping() {
    notify(sd_notify::NotifyState::Stopping, "stopping");
}

fn notify(state: sd_notify::NotifyState<'_>, what: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, state = what, "cannot tell the service manager");
    }
}
